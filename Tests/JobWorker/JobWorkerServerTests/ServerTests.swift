import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import JobWorkerCore
import JobWorkerProtos
import JobWorkerServer
import ServiceKit
import TLSKit
import TestSupport
import Testing

/// A real job worker (built by `JobWorkerServer.build` as the `jobworker` binary builds it:
/// real JobManager, real mTLS on 127.0.0.1:0) while `body` runs, shut down gracefully after
/// it as on SIGTERM. Tests that call it are gated with `.requires(.cgroups)`.
func withJobWorker(
  pki: TestPKI, limits: JobWorkerAPI.Limits = .init(), maxOutputBytes: UInt64 = 64 << 20,
  _ body: @Sendable (_ port: Int, _ worker: JobWorkerServer) async throws -> Void
) async throws {
  var configuration = JobWorkerServer.Configuration(
    listen: HostPort(host: "127.0.0.1", port: 0), tls: pki.serverTLS,
    manager: JobManager.Configuration(
      dataDirectory: pki.directory + "/data", maxOutputBytesPerJob: maxOutputBytes,
      stopGracePeriod: .seconds(1),
      cgroupName: "jobworker-test-\(UUID().uuidString.prefix(8))"))
  configuration.limits = limits
  let worker = try await JobWorkerServer.build(configuration: configuration, logger: quietLogger)
  do {
    try await withServiceGroup(worker.services, logger: quietLogger) { _ in
      let port = try #require(await worker.server.listeningAddress?.port)
      try await body(port, worker)
    }
  } catch {
    // The drain that stops the jobs may not have run (or was cut short).
    await worker.manager.shutdown()
    throw error
  }
}

func start(
  _ command: String, _ args: [String], port: Int, as files: ClientTLSFiles
) async throws -> Jobworker_V1_JobStatus {
  try await withJobClient(port: port, files: files) { client in
    try await client.startJob(
      .with {
        $0.command = command
        $0.args = args
      }, options: testCallOptions
    ).job
  }
}

/// All output bytes and the final status of a job, as one client sees them.
func collectOutput(
  id: String, port: Int, as files: ClientTLSFiles
) async throws -> ([UInt8], Jobworker_V1_JobStatus?, maxChunk: Int) {
  try await withJobClient(port: port, files: files) { client in
    try await client.streamOutput(.with { $0.jobID = id }, options: testCallOptions) { response in
      var bytes: [UInt8] = []
      var final: Jobworker_V1_JobStatus?
      var maxChunk = 0
      for try await message in response.messages {
        switch message.event {
        case .output(let data):
          bytes += data
          maxChunk = max(maxChunk, data.count)
        case .finalStatus(let status): final = status
        case .none: break
        }
      }
      return (bytes, final, maxChunk)
    }
  }
}

@Suite("Job worker server", .serialized)
struct ServerTests {
  @Test("a user cannot see, stop or stream another user's job; an admin can", .requires(.cgroups))
  func authorization() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let job = try await start("sleep", ["30"], port: port, as: pki.client("alice"))
      #expect(job.owner == "alice")
      let id = job.jobID

      // bob: exactly like a job that does not exist.
      let missing = UUID().uuidString.lowercased()
      for target in [id, missing] {
        try await withJobClient(port: port, files: pki.client("bob")) { client in
          let status = await #expect(throws: RPCError.self) {
            try await client.getJobStatus(.with { $0.jobID = target }, options: testCallOptions)
          }
          #expect(status?.code == .notFound)
          #expect(status?.message == RetentionServerTests.expectedMessage(target))
          let stop = await #expect(throws: RPCError.self) {
            try await client.stopJob(.with { $0.jobID = target }, options: testCallOptions)
          }
          #expect(stop?.code == .notFound)
          let stream = await #expect(throws: RPCError.self) {
            try await client.streamOutput(.with { $0.jobID = target }, options: testCallOptions) {
              response in for try await _ in response.messages {}
            }
          }
          #expect(stream?.code == .notFound)
          let list = try? await client.listJobs(.init(), options: testCallOptions)
          #expect(list?.jobs.isEmpty == true)
        }
      }

      // alice sees her job; admin sees and stops it.
      let aliceList = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.listJobs(.init(), options: testCallOptions).jobs.map(\.jobID)
      }
      #expect(aliceList == [id])
      let stopped = try await withJobClient(port: port, files: pki.client("admin")) { client in
        _ = try await client.getJobStatus(.with { $0.jobID = id }, options: testCallOptions)
        return try await client.stopJob(.with { $0.jobID = id }, options: testCallOptions).job
      }
      #expect(stopped.state == .stopped)
    }
  }

  /// A gateway's certificate (role gateway) comes from the same CA but is for presence
  /// reports only: before the role existed, the gateway's `user` certificate could run jobs.
  @Test("a gateway certificate is refused by the job API", .requires(.cgroups))
  func gatewayRoleIsRefused() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      try await withJobClient(port: port, files: pki.client("gateway")) { client in
        let list = await #expect(throws: RPCError.self) {
          try await client.listJobs(.init(), options: testCallOptions)
        }
        #expect(list?.code == .permissionDenied, "\(String(describing: list))")
        #expect(list?.message.contains("role gateway, which may not use the job API") == true)
        let start = await #expect(throws: RPCError.self) {
          try await client.startJob(
            .with { $0.command = "/bin/true" }, options: testCallOptions)
        }
        #expect(start?.code == .permissionDenied, "\(String(describing: start))")
      }
    }
  }

  @Test("errors map to gRPC codes", .requires(.cgroups))
  func errorCodes() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki, limits: .init(maxRunningJobsPerUser: 1)) { port, _ in
      try await withJobClient(port: port, files: pki.client("alice")) { client in
        let badID = await #expect(throws: RPCError.self) {
          try await client.getJobStatus(.with { $0.jobID = "nope" }, options: testCallOptions)
        }
        #expect(badID?.code == .invalidArgument)
        let empty = await #expect(throws: RPCError.self) {
          try await client.startJob(.init(), options: testCallOptions)
        }
        #expect(empty?.code == .invalidArgument)
        let missing = await #expect(throws: RPCError.self) {
          try await client.startJob(
            .with { $0.command = "/nonexistent/program" }, options: testCallOptions)
        }
        #expect(missing?.code == .failedPrecondition || missing?.code == .invalidArgument)
        _ = try await client.startJob(
          .with {
            $0.command = "sleep"
            $0.args = ["30"]
          }, options: testCallOptions)
        let capped = await #expect(throws: RPCError.self) {
          try await client.startJob(
            .with {
              $0.command = "sleep"
              $0.args = ["30"]
            }, options: testCallOptions)
        }
        #expect(capped?.code == .resourceExhausted)
      }
    }
  }

  @Test(
    "a failure while streaming reaches the client as internalError, not unknown",
    .requires(.cgroups))
  func streamFailureCode() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let job = try await start("echo", ["hi"], port: port, as: pki.client("alice"))
      let (bytes, final, _) = try await collectOutput(
        id: job.jobID, port: port, as: pki.client("alice"))
      #expect(bytes == Array("hi\n".utf8))
      #expect(final?.state == .exited)
      // The log is gone: the library throws a JobError while streaming.
      #expect(unlink(pki.directory + "/data/jobs/\(job.jobID)/output") == 0)
      let error = await #expect(throws: RPCError.self) {
        try await collectOutput(id: job.jobID, port: port, as: pki.client("alice"))
      }
      #expect(error?.code == .internalError)
      #expect(error?.message.hasPrefix("cannot open") == true, "\(String(describing: error))")
    }
  }

  @Test(
    "two clients stream one job concurrently and get identical bytes, in bounded chunks",
    .requires(.cgroups))
  func concurrentStreams() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      // ~200 KB of output, binary-safe (includes every byte value), over about a second.
      let job = try await start(
        "sh", ["-c", "for i in 1 2 3 4 5; do head -c 40000 /dev/urandom; sleep 0.2; done"],
        port: port, as: pki.client("alice"))
      async let first = collectOutput(id: job.jobID, port: port, as: pki.client("alice"))
      async let second = collectOutput(id: job.jobID, port: port, as: pki.client("admin"))
      let (a, b) = try await (first, second)
      #expect(a.0.count == 200_000)
      #expect(a.0 == b.0)
      #expect(a.1?.state == .exited && a.1?.exitCode == 0)
      let bound = JobWorkerAPI.Limits().maxChunkBytes
      #expect(a.maxChunk <= bound && b.maxChunk <= bound)
    }
  }

  @Test(
    "a finished job's output goes out in full messages of the configured size",
    .requires(.cgroups))
  func backlogUsesFullMessages() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    let maxChunkBytes = 64 * 1024
    try await withJobWorker(pki: pki, limits: .init(maxChunkBytes: maxChunkBytes)) { port, worker in
      let job = try await start(
        "head", ["-c", "1000000", "/dev/urandom"], port: port, as: pki.client("alice"))
      let id = try #require(JobID(job.jobID))
      #expect(await eventually { (try? worker.manager.status(id).state) == .exited(code: 0) })
      let (bytes, final, maxChunk) = try await collectOutput(
        id: job.jobID, port: port, as: pki.client("alice"))
      #expect(bytes.count == 1_000_000)
      #expect(final?.state == .exited && final?.outputBytes == 1_000_000)
      #expect(maxChunk == maxChunkBytes)
    }
  }

  @Test("a client that disconnects mid-stream leaves the server serving", .requires(.cgroups))
  func disconnectMidStream() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, server in
      let job = try await start(
        "sh", ["-c", "while true; do echo tick; sleep 0.05; done"], port: port,
        as: pki.client("alice"))
      for _ in 0..<5 {
        // Read one message, then return: the client cancels the RPC and closes the connection.
        let got = try await withJobClient(port: port, files: pki.client("alice")) { client in
          try await client.streamOutput(.with { $0.jobID = job.jobID }, options: testCallOptions) {
            response in
            for try await message in response.messages {
              if case .output = message.event { return true }
            }
            return false
          }
        }
        #expect(got)
      }
      // Connections are gone from the registry, and the server still answers.
      let deadline = ContinuousClock.now + .seconds(5)
      while server.peers.count > 0 && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
      }
      #expect(server.peers.count == 0)
      let status = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.stopJob(.with { $0.jobID = job.jobID }, options: testCallOptions).job
      }
      #expect(status.state == .stopped)
    }
  }

  @Test("a client that leaves while its job is quiet frees the stream at once", .requires(.cgroups))
  func quietStreamCancelled() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, server in
      // One line, then silence: nothing more will ever be written to this stream.
      let job = try await start(
        "sh", ["-c", "echo start; exec sleep 600"], port: port, as: pki.client("alice"))
      let got = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.streamOutput(.with { $0.jobID = job.jobID }, options: testCallOptions) {
          response in
          for try await message in response.messages {
            if case .output = message.event { return true }
          }
          return false
        }
      }
      #expect(got)
      let deadline = ContinuousClock.now + .seconds(5)
      while server.service.activeOutputStreams > 0 && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
      }
      #expect(server.service.activeOutputStreams == 0, "the handler outlived its client")
      _ = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.stopJob(.with { $0.jobID = job.jobID }, options: testCallOptions).job
      }
    }
  }
}
