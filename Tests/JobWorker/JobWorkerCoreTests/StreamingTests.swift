import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

@Suite("Output streaming")
struct StreamingTests {
  /// Three readers attach while the job runs, a fourth after it ended: all four get the same,
  /// complete bytes from the first one.
  @Test(.requires(.cgroups)) func concurrentReadersGetIdenticalCompleteOutput() async throws {
    try await withManager { manager in
      let job = try await manager.start(
        JobSpec(
          command: "sh", arguments: ["-c", "for i in 1 2 3 4 5; do seq 20000; sleep 0.1; done"]))
      let outputs = try await withThrowingTaskGroup(of: [UInt8].self) { group in
        for _ in 0..<3 { group.addTask { try await manager.collect(job.id) } }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      let late = try await manager.collect(job.id)
      let expected = Array(
        String(repeating: (1...20000).map { "\($0)\n" }.joined(), count: 5).utf8)
      #expect(outputs.count == 3)
      for output in outputs + [late] {
        #expect(output.count == expected.count)
        #expect(output == expected)
      }
      let status = try manager.status(job.id)
      #expect(status.state == .exited(code: 0))
      // Neither the pump nor any finished reader keeps the log open.
      #expect(openDescriptors(to: try #require(manager.job(job.id)).logPath) == 0)
      #expect(status.outputBytes == UInt64(expected.count))
      #expect(!status.outputTruncated)
    }
  }

  /// A reader with a backlog gets full chunks of the size it asked for, never larger, and
  /// the same bytes whatever the chunk size (issue 13: larger messages for a backlog).
  @Test(.requires(.cgroups)) func chunksAreBoundedAndABacklogFillsThem() async throws {
    try await withManager { manager in
      let (status, _) = try await manager.run("head", "-c", "1000000", "/dev/urandom")
      #expect(status.state == .exited(code: 0))
      let job = try #require(manager.job(status.id))
      var reference: [UInt8]?
      for maxChunkBytes in [1, 4096, 100_000, JobOutput.defaultMaxChunkBytes, 4 << 20] {
        // One byte per chunk is slow: a prefix of the output shows the bound.
        let limit = maxChunkBytes == 1 ? 5000 : Int.max
        var bytes: [UInt8] = []
        var sizes: [Int] = []
        for try await chunk in try manager.output(status.id, maxChunkBytes: maxChunkBytes) {
          bytes += chunk
          sizes.append(chunk.count)
          if bytes.count >= limit { break }
        }
        // The job has ended: every chunk but the last is full.
        #expect(sizes.dropLast().allSatisfy { $0 == maxChunkBytes }, "\(maxChunkBytes)")
        #expect(sizes.last.map { $0 <= maxChunkBytes } == true, "\(maxChunkBytes)")
        if limit == Int.max {
          #expect(bytes.count == 1_000_000)
          if let reference { #expect(bytes == reference) } else { reference = bytes }
        }
      }
      #expect(openDescriptors(to: job.logPath) == 0)
    }
  }

  /// Past the cap the job keeps running (its pipe is drained) and the rest is dropped.
  @Test(.requires(.cgroups)) func outputCap() async throws {
    try await withManager(maxOutputBytes: 1000) { manager in
      let (status, output) = try await manager.run("seq", "100000")
      #expect(status.state == .exited(code: 0))
      #expect(status.outputBytes == 1000)
      #expect(status.outputLoss == .capReached(limit: 1000))
      #expect(
        status.outputLoss?.description
          == "the output reached the job worker's cap of 1000 bytes; the rest was dropped")
      #expect(output.utf8.count == 1000)
      #expect(output.hasPrefix("1\n2\n3\n"))
    }
  }

  /// The data directory's disk fills up: the status says that output was lost and why, and
  /// what was stored is an exact prefix (issue 11, item 8). Before, the reactor logged an
  /// error per chunk, the status said only "truncated", and chunks written once the disk had
  /// room again left holes in the log.
  @Test(.requires(.cgroups)) func fullDiskIsReported() async throws {
    let mountPoint = "/var/tmp/jobworker-full-\(UUID().uuidString.prefix(8).lowercased())"
    try #require(mkdir(mountPoint, 0o700) == 0)
    defer { rmdir(mountPoint) }
    try #require(
      mount("tmpfs", mountPoint, "tmpfs", 0, "size=256k") == 0, "mount: \(errnoText())")
    // Lazily: a job init cloned by another test may hold a descriptor into it for a moment.
    defer { umount2(mountPoint, Int32(MNT_DETACH)) }
    let name = "jobworker-test-\(UUID().uuidString.prefix(8).lowercased())"
    let logs = LogRecorder()
    let manager = try JobManager(
      configuration: .init(dataDirectory: mountPoint + "/data", cgroupName: name),
      logger: logs.logger)
    do {
      let (status, output) = try await manager.run(
        "sh", "-c", "head -c 1M /dev/zero | tr '\\0' x; echo END")
      #expect(status.state == .exited(code: 0))
      #expect(status.outputLoss == .writeFailed(errno: ENOSPC))
      #expect(
        status.outputLoss?.description
          == "the job worker could not store the output (No space left on device); the rest "
          + "was dropped")
      #expect(status.outputBytes > 0 && status.outputBytes < 256 << 10)
      #expect(UInt64(output.utf8.count) == status.outputBytes)
      #expect(output.utf8.allSatisfy { $0 == UInt8(ascii: "x") })
      // One error in the worker's log, not one per chunk that followed.
      let errors = logs.logged.filter { $0.message.hasPrefix("cannot store the job's output") }
      #expect(errors.count == 1)
    } catch {
      await manager.shutdown()
      throw error
    }
    await manager.shutdown()
  }

  /// A reader whose task is cancelled while it waits for more output ends promptly with
  /// CancellationError and leaves no waiter behind.
  @Test(.requires(.cgroups)) func cancelledReaderLeavesNothingBehind() async throws {
    try await withManager { manager in
      let job = try await manager.start(
        JobSpec(command: "sh", arguments: ["-c", "echo first; exec sleep 600"]))
      let reader = Task {
        var received: [UInt8] = []
        do {
          for try await chunk in try manager.output(job.id) { received += chunk }
          return "finished"
        } catch is CancellationError {
          return String(decoding: received, as: UTF8.self)
        }
      }
      // Wait until the reader has the first line and sleeps on the next wake-up.
      let internalJob = try #require(manager.job(job.id))
      while internalJob.waiterCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
      reader.cancel()
      #expect(try await reader.value == "first\n")
      #expect(internalJob.waiterCount == 0)
      // The cancelled reader's descriptor is closed; only the pump's remains.
      #expect(openDescriptors(to: internalJob.logPath) == 1)
      let stopped = try await manager.stop(job.id)
      #expect(stopped.state == .stopped(signal: SIGTERM))
    }
  }
}
