import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import JobWorkerProtos
import ServiceKit
import TestSupport
import Testing

/// The server against malformed or oversized requests (issue 11, item 10).
@Suite("Job worker server: hostile input", .serialized)
struct HostileInputTests {
  @Test("max_pids 1 is refused with INVALID_ARGUMENT naming the minimum", .requires(.cgroups))
  func pidsOne() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let error = await #expect(throws: RPCError.self) {
        try await withJobClient(port: port, files: pki.client("alice")) { client in
          try await client.startJob(
            .with {
              $0.command = "true"
              $0.limits.maxPids = 1
            }, options: testCallOptions)
        }
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("at least 2") == true, "\(String(describing: error))")
      // 2 (the init and the program) starts.
      let job = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.startJob(
          .with {
            $0.command = "true"
            $0.limits.maxPids = 2
          }, options: testCallOptions
        ).job
      }
      #expect(job.limits.maxPids == 2)
    }
  }

  /// Regression (issue 11): a request over 64 KiB was reset inside grpc-swift-nio-transport
  /// (2.9.2) before any handler (its decoder's `resourceExhausted` becomes a stream reset, and
  /// the client reported `unavailable`). `RequestMessageGuard` now answers from the message's
  /// 5-byte prefix, whatever the size: the 10 MB request is refused before its body is read.
  @Test(
    "a request over 64 KiB is answered RESOURCE_EXHAUSTED naming its size and the limit",
    .requires(.cgroups))
  func oversizedRequestIsRefused() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      func status(jobIDBytes: Int) async -> RPCError? {
        await #expect(throws: RPCError.self) {
          try await withJobClient(port: port, files: pki.client("admin")) { client in
            try await client.getJobStatus(
              .with { $0.jobID = String(repeating: "a", count: jobIDBytes) },
              options: testCallOptions)
          }
        }
      }
      for (bytes, encoded) in [(100_000, 100_004), (10_000_000, 10_000_005)] {
        let refused = await status(jobIDBytes: bytes)
        #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")
        #expect(
          refused?.message
            == "request message of \(encoded) bytes is over this server's limit of 65536 bytes",
          "\(String(describing: refused))")
      }
      // Just under the limit, the handler answers.
      let handled = await status(jobIDBytes: 60_000)
      #expect(handled?.code == .invalidArgument, "\(String(describing: handled))")
    }
  }
}
