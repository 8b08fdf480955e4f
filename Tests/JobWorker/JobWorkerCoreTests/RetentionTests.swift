import Foundation
import Glibc
import Logging
import TestSupport
import Testing

@testable import JobWorkerCore

/// Issue 11, item 7: ended jobs and their output used to stay until the worker stopped, and
/// their files forever (310 MB over 153 jobs survived six restarts). Time is the subject here,
/// so every sweep gets its `now` from the test; nothing sleeps for a retention period.
@Suite("Retention of ended jobs")
struct RetentionTests {
  static let day: TimeInterval = 24 * 60 * 60

  /// A job that ended longer than the retention (default 24 h) ago is forgotten: its record,
  /// its output file and its directory; `status` and `output` answer `notFound` with the
  /// documented message, and the sweep logs at info what it removed.
  @Test(.requires(.cgroups)) func expiredJobIsForgotten() async throws {
    let logs = LogRecorder()
    try await withManager(logger: logs.logger) { manager in
      let (status, output) = try await manager.run("sh", "-c", "echo hello")
      #expect(output == "hello\n")
      let endedAt = try #require(status.endedAt)
      let logPath = try #require(manager.job(status.id)).logPath
      #expect(FileManager.default.fileExists(atPath: logPath))

      // Within the retention: nothing happens, and nothing is logged at info.
      #expect(manager.sweep(now: endedAt.addingTimeInterval(Self.day - 1)) == RetentionSweep())
      #expect(try manager.status(status.id).state == .exited(code: 0))
      #expect(!logs.logged.contains { $0.message.hasPrefix("forgot") })

      // A second past the retention (floating-point dates need not add up exactly).
      let sweep = manager.sweep(now: endedAt.addingTimeInterval(Self.day + 1))
      #expect(sweep.forgotten == [status.id])
      #expect(sweep.bytes == 6)
      #expect(sweep.expired == 1)
      #expect(!FileManager.default.fileExists(atPath: logPath))
      #expect(
        !FileManager.default.fileExists(atPath: (logPath as NSString).deletingLastPathComponent))
      #expect(manager.list().isEmpty)

      let expected =
        "job \(status.id) not found: no such job, or its record expired (ended jobs are kept "
        + "for 24h, less once their stored output exceeds the job worker's cap)"
      let statusError = #expect(throws: JobError.self) { try manager.status(status.id) }
      #expect(statusError?.code == .notFound)
      #expect(statusError?.message == expected)
      let outputError = #expect(throws: JobError.self) { try manager.output(status.id) }
      #expect(outputError?.code == .notFound)
      #expect(outputError?.message == expected)
      let stopError = await #expect(throws: JobError.self) { try await manager.stop(status.id) }
      #expect(stopError?.message == expected)
      // A job that never existed gets the very same answer.
      let missing = try #require(JobID(UUID().uuidString))
      #expect(
        manager.unknownJobError(missing).message
          == expected.replacingOccurrences(
            of: status.id.description, with: missing.description))

      let info = logs.logged.filter { $0.message == "forgot ended jobs and removed their output" }
      #expect(info.count == 1)
      #expect(info.first?.level == .info)
      #expect(info.first?.metadata["jobworker.jobs"] == "1")
      #expect(info.first?.metadata["jobworker.bytes"] == "6")
      // Nothing left to do: no second log line.
      #expect(manager.sweep(now: endedAt.addingTimeInterval(2 * Self.day)) == RetentionSweep())
      #expect(
        logs.logged.filter { $0.message == "forgot ended jobs and removed their output" }.count
          == 1)
    }
  }

  /// Over the cap on stored output, the ended jobs that ended first are forgotten until the
  /// total fits; running jobs count toward it but are never touched, even when they alone are
  /// over the cap.
  @Test(.requires(.cgroups)) func capForgetsOldestEndedJobsAndNeverRunningOnes() async throws {
    try await withManager(
      grace: .milliseconds(200), maxOutputBytes: 1000, maxStoredOutputBytes: 2000
    ) {
      manager in
      func ended() async throws -> JobID {
        try await manager.run("head", "-c", "1000", "/dev/zero").status.id
      }
      func running() async throws -> JobID {
        let job = try await manager.start(
          JobSpec(command: "sh", arguments: ["-c", "head -c 1000 /dev/zero; exec sleep 60"]))
        let stored = await eventually {
          (try? manager.status(job.id).outputBytes) == 1000
        }
        try #require(stored, "the running job never stored its 1000 bytes")
        return job.id
      }
      let first = try await ended()
      let second = try await ended()
      let runningA = try await running()
      // 3000 bytes: the older ended job goes, and that is enough.
      #expect(manager.sweep().forgotten == [first])
      #expect(try manager.status(second).outputBytes == 1000)

      let runningB = try await running()
      #expect(manager.sweep().forgotten == [second])

      // Only running jobs are left, 3000 bytes over a cap of 2000: none is touched.
      let runningC = try await running()
      #expect(manager.sweep() == RetentionSweep())
      for id in [runningA, runningB, runningC] {
        #expect(try manager.status(id).state == .running)
        let logPath = try #require(manager.job(id)).logPath
        #expect(FileManager.default.fileExists(atPath: logPath))
      }
      // Ten years on, still running, still kept.
      #expect(manager.sweep(now: Date().addingTimeInterval(3650 * Self.day)) == RetentionSweep())
      for id in [runningA, runningB, runningC] { _ = try await manager.stop(id) }
    }
  }

  /// A reader in the middle of a job's output when the job is forgotten reads on to the end
  /// and gets the final status, and so does one that got its sequence before but starts
  /// reading after: the file is unlinked, and the descriptor the sequence opened keeps its
  /// data.
  @Test(.requires(.cgroups)) func openStreamOutlivesItsJob() async throws {
    try await withManager { manager in
      let (status, _) = try await manager.run("seq", "100000")
      let expected = Array((1...100000).map { "\($0)\n" }.joined().utf8)
      #expect(status.outputBytes == UInt64(expected.count))
      let output = try manager.output(status.id)
      var iterator = output.makeAsyncIterator()
      var bytes = Array(try #require(try await iterator.next()))
      #expect(bytes.count < expected.count)
      // Asked for before the sweep, read only after it.
      let unread = try manager.output(status.id)

      let endedAt = try #require(status.endedAt)
      #expect(manager.sweep(now: endedAt.addingTimeInterval(Self.day + 1)).forgotten == [status.id])
      #expect(throws: JobError.self) { try manager.status(status.id) }

      while let chunk = try await iterator.next() { bytes += chunk }
      #expect(bytes == expected)
      var late: [UInt8] = []
      for try await chunk in unread { late += chunk }
      #expect(late == expected)
      #expect(output.status.state == .exited(code: 0))
      #expect(output.status.outputBytes == UInt64(expected.count))
    }
  }

  /// Files left by earlier runs (the record of their jobs died with that run) are removed at
  /// start-up once past the retention or over the cap, oldest first; the rest age out in later
  /// sweeps. Nothing that does not follow the layout `jobs/<uuid>/output` is touched, and
  /// symlinks are never followed out of the data directory.
  @Test(.requires(.cgroups)) func earlierRunsOutputIsSweptAtStart() async throws {
    let root = "/var/tmp/jobworker-test-\(UUID().uuidString.prefix(8).lowercased())"
    defer { try? FileManager.default.removeItem(atPath: root) }
    let data = root + "/data"
    let jobs = data + "/jobs"
    let outside = root + "/outside"
    try FileManager.default.createDirectory(atPath: jobs, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
    let now = Date()
    func id() -> String { UUID().uuidString.lowercased() }
    func file(_ path: String, bytes: Int, age: TimeInterval) throws {
      try Data(repeating: 0x61, count: bytes).write(to: URL(fileURLWithPath: path))
      let time = now.addingTimeInterval(-age).timeIntervalSince1970
      var times = [
        timespec(tv_sec: Int(time), tv_nsec: 0), timespec(tv_sec: Int(time), tv_nsec: 0),
      ]
      try #require(utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0)
    }
    func job(_ id: String, bytes: Int, age: TimeInterval) throws {
      try FileManager.default.createDirectory(
        atPath: "\(jobs)/\(id)", withIntermediateDirectories: false)
      try file("\(jobs)/\(id)/output", bytes: bytes, age: age)
    }

    let expired = id()
    try job(expired, bytes: 100, age: 2 * Self.day)
    // 600 + 600 bytes over a cap of 1000: the older one goes.
    let overCap = id()
    try job(overCap, bytes: 600, age: 2 * 3600)
    let kept = id()
    try job(kept, bytes: 600, age: 3600)
    let empty = id()
    try FileManager.default.createDirectory(
      atPath: "\(jobs)/\(empty)", withIntermediateDirectories: false)
    // Not the layout: left alone however old.
    let upper = id().uppercased()
    try job(upper, bytes: 10, age: 3 * Self.day)
    try FileManager.default.createDirectory(
      atPath: "\(jobs)/notes", withIntermediateDirectories: false)
    try file("\(jobs)/notes/output", bytes: 10, age: 3 * Self.day)
    try file("\(jobs)/\(id())", bytes: 10, age: 3 * Self.day)
    // Symlinks out of the data directory: never followed.
    try FileManager.default.createDirectory(
      atPath: "\(outside)/dir", withIntermediateDirectories: false)
    try file("\(outside)/dir/output", bytes: 10, age: 3 * Self.day)
    try file("\(outside)/file", bytes: 10, age: 3 * Self.day)
    let linkedDirectory = id()
    try #require(symlink("\(outside)/dir", "\(jobs)/\(linkedDirectory)") == 0)
    let linkedFile = id()
    try FileManager.default.createDirectory(
      atPath: "\(jobs)/\(linkedFile)", withIntermediateDirectories: false)
    try #require(symlink("\(outside)/file", "\(jobs)/\(linkedFile)/output") == 0)

    let logs = LogRecorder()
    try await withManager(
      maxOutputBytes: 1000, maxStoredOutputBytes: 1000, dataDirectory: data, logger: logs.logger
    ) { manager in
      let exists = { (path: String) in FileManager.default.fileExists(atPath: path) }
      #expect(!exists("\(jobs)/\(expired)"))
      #expect(!exists("\(jobs)/\(overCap)"))
      #expect(!exists("\(jobs)/\(empty)"))
      #expect(exists("\(jobs)/\(kept)/output"))
      #expect(exists("\(jobs)/\(upper)/output"))
      #expect(exists("\(jobs)/notes/output"))
      #expect(exists("\(outside)/dir/output"))
      #expect(exists("\(outside)/file"))
      #expect(exists("\(jobs)/\(linkedDirectory)"))
      #expect(exists("\(jobs)/\(linkedFile)/output"))
      let info = logs.logged.first { $0.message == "forgot ended jobs and removed their output" }
      #expect(info?.metadata["jobworker.jobs"] == "2")
      #expect(info?.metadata["jobworker.bytes"] == "700")
      #expect(info?.metadata["jobworker.expired"] == "1")
      #expect(manager.list().isEmpty)

      // The one that was kept ages out in a later sweep.
      let later = manager.sweep(now: now.addingTimeInterval(Self.day + 1))
      #expect(later.forgotten.map(\.description) == [kept])
      #expect(!exists("\(jobs)/\(kept)"))
      #expect(exists("\(outside)/dir/output"))
      #expect(exists("\(outside)/file"))
    }
  }

  /// A retention of zero would forget every job as it ends; a storage cap below the per-job
  /// cap could never hold one job's output.
  @Test(.requires(.root)) func configurationIsValidated() throws {
    let directory = "/var/tmp/jobworker-test-\(UUID().uuidString.prefix(8).lowercased())"
    defer { try? FileManager.default.removeItem(atPath: directory) }
    for (configuration, message) in [
      (
        JobManager.Configuration(dataDirectory: directory, retention: .zero),
        "the retention period of ended jobs must be more than zero"
      ),
      (
        JobManager.Configuration(dataDirectory: directory, retention: .seconds(-5)),
        "the retention period of ended jobs must be more than zero"
      ),
      (
        JobManager.Configuration(
          dataDirectory: directory, maxOutputBytesPerJob: 2048, maxStoredOutputBytes: 2047),
        "the cap on stored output (2047 bytes) must be at least the output cap per job "
          + "(2048 bytes)"
      ),
    ] {
      let error = #expect(throws: JobError.self) {
        _ = try JobManager(configuration: configuration, logger: Logger(label: "test"))
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message == message)
    }
  }
}

/// The choice itself, without processes.
@Suite("Retention plan")
struct RetentionPlanTests {
  let now = Date(timeIntervalSince1970: 1_000_000)
  let ids = (0..<5).map { _ in JobID() }

  func entry(_ index: Int, endedAgo: TimeInterval?, bytes: UInt64 = 10) -> Retention.Entry {
    Retention.Entry(
      id: ids[index], endedAt: endedAgo.map { now.addingTimeInterval(-$0) }, bytes: bytes)
  }

  func plan(_ entries: [Retention.Entry], retention: Duration = .seconds(100), cap: UInt64 = 1000)
    -> [String]
  {
    Retention.plan(entries, now: now, retention: retention, maxStoredBytes: cap).map {
      "\(ids.firstIndex(of: $0.entry.id)!) \($0.reason)"
    }
  }

  @Test func expiryIsInclusiveAndRunningJobsNeverExpire() {
    #expect(
      plan([entry(0, endedAgo: 100), entry(1, endedAgo: 99.5), entry(2, endedAgo: nil)])
        == ["0 expired"])
  }

  @Test func overCapTakesTheOldestEndedFirstUntilItFits() {
    let entries = [
      entry(0, endedAgo: 10, bytes: 400), entry(1, endedAgo: 30, bytes: 400),
      entry(2, endedAgo: nil, bytes: 400), entry(3, endedAgo: 20, bytes: 400),
      entry(4, endedAgo: 500, bytes: 400),
    ]
    // 4 expires (and no longer counts); 1600 left over 1000: 1 (oldest), then 3.
    #expect(plan(entries) == ["4 expired", "1 overCap", "3 overCap"])
  }

  @Test func runningJobsAloneOverTheCapAreKept() {
    #expect(
      plan([entry(0, endedAgo: nil, bytes: 2000), entry(1, endedAgo: 1, bytes: 1)], cap: 1000)
        == ["1 overCap"])
    #expect(plan([entry(0, endedAgo: nil, bytes: 2000)], cap: 1000).isEmpty)
  }

  @Test func retentionText() {
    #expect(Duration.seconds(24 * 3600).retentionText == "24h")
    #expect(Duration.seconds(5400).retentionText == "1h30m")
    #expect(Duration.seconds(90).retentionText == "1m30s")
    #expect(Duration.milliseconds(250).retentionText == "250ms")
  }
}
