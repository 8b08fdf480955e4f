import Foundation
import GRPCCore
import JobWorkerCore
import JobWorkerProtos
import JobWorkerServer
import TestSupport
import Testing

/// Issue 11, item 7, through the API: what `status` and `logs` answer once an ended job was
/// forgotten, and that forgetting never breaks a stream or tells one user about another's
/// jobs.
@Suite("Retention through the API", .serialized)
struct RetentionServerTests {
  static let twoDays: TimeInterval = 2 * 24 * 60 * 60

  static func expectedMessage(_ id: String) -> String {
    "job \(id) not found: no such job, or its record expired (ended jobs are kept for 24h, "
      + "less once their stored output exceeds the job worker's cap)"
  }

  @Test(
    "an expired job answers NOT_FOUND to status and logs, the same for its owner, others and admin",
    .requires(.cgroups), .requires(.product("jobctl")))
  func expiredJob() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, worker in
      let ended = try await start("echo", ["hi"], port: port, as: pki.client("alice"))
      _ = try await collectOutput(id: ended.jobID, port: port, as: pki.client("alice"))
      let alive = try await start("sleep", ["30"], port: port, as: pki.client("alice"))
      let endedID = try #require(JobID(ended.jobID))

      // A sweeper as the server runs one, on a clock two days ahead.
      let sweeper = RetentionSweeper(
        manager: worker.manager, interval: .milliseconds(10),
        now: { Date().addingTimeInterval(Self.twoDays) })
      let forgotten = await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await sweeper.run() }
        defer { group.cancelAll() }
        return await eventually { (try? worker.manager.status(endedID)) == nil }
      }
      #expect(forgotten, "the sweeper never forgot the ended job")
      #expect(!FileManager.default.fileExists(atPath: pki.directory + "/data/jobs/\(ended.jobID)"))

      let missing = UUID().uuidString.lowercased()
      for (user, target) in [
        ("alice", ended.jobID), ("bob", ended.jobID), ("admin", ended.jobID),
        ("alice", missing), ("bob", alive.jobID),
      ] {
        try await withJobClient(port: port, files: pki.client(user)) { client in
          let status = await #expect(throws: RPCError.self) {
            try await client.getJobStatus(.with { $0.jobID = target }, options: testCallOptions)
          }
          #expect(status?.code == .notFound)
          #expect(status?.message == Self.expectedMessage(target), "\(user)")
          let stream = await #expect(throws: RPCError.self) {
            try await client.streamOutput(.with { $0.jobID = target }, options: testCallOptions) {
              response in for try await _ in response.messages {}
            }
          }
          #expect(stream?.code == .notFound)
          #expect(stream?.message == Self.expectedMessage(target), "\(user)")
        }
      }
      let list = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.listJobs(.init(), options: testCallOptions).jobs.map(\.jobID)
      }
      #expect(list == [alive.jobID])

      // What a user sees.
      var environment = ProcessInfo.processInfo.environment
      environment["JOBCTL_DIR"] = pki.directory
      environment["JOBCTL_SERVER"] = "127.0.0.1:\(port)"
      environment["JOBCTL_USER"] = "alice"
      for command in ["status", "logs"] {
        let result = try await runProcess(
          builtProduct("jobctl"), [command, ended.jobID], environment: environment)
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr == "jobctl: error: \(Self.expectedMessage(ended.jobID))\n")
      }
    }
  }

  /// A client in the middle of a long output when its job is forgotten gets every byte and the
  /// final status: the stream's file stays readable, and the final status comes from the
  /// stream's own job, not from a lookup that now fails.
  @Test(
    "a stream open while its job is forgotten ends with every byte and the final status",
    .requires(.cgroups))
  func streamOutlivesItsJob() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, worker in
      // About 6.9 MB: far more than the 1 MiB stream window, so the server is still sending
      // when the job is forgotten.
      let job = try await start("seq", ["1000000"], port: port, as: pki.client("alice"))
      let id = try #require(JobID(job.jobID))
      let endedAt = try await {
        let done = await eventually { (try? worker.manager.status(id).endedAt) != nil }
        try #require(done)
        return try #require(try worker.manager.status(id).endedAt)
      }()
      let expected = Array((1...1_000_000).map { "\($0)\n" }.joined().utf8)
      let (bytes, final) = try await withJobClient(port: port, files: pki.client("alice")) {
        client in
        try await client.streamOutput(.with { $0.jobID = job.jobID }, options: testCallOptions) {
          response in
          var bytes: [UInt8] = []
          var final: Jobworker_V1_JobStatus?
          for try await message in response.messages {
            switch message.event {
            case .output(let data):
              if bytes.isEmpty {
                let sweep = worker.manager.sweep(now: endedAt.addingTimeInterval(Self.twoDays))
                #expect(sweep.forgotten == [id])
              }
              bytes += data
            case .finalStatus(let status): final = status
            case .none: break
            }
          }
          return (bytes, final)
        }
      }
      #expect(bytes.count == expected.count)
      #expect(bytes == expected)
      #expect(final?.state == .exited && final?.exitCode == 0)
      #expect(final?.outputBytes == UInt64(expected.count))
      #expect(throws: JobError.self) { try worker.manager.status(id) }
    }
  }
}
