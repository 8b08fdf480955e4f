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

  /// Why the server cannot answer an over-limit request with a status naming the limit: the
  /// message is refused inside grpc-swift-nio-transport (2.9.2) before any handler or
  /// interceptor sees it. `GRPCMessageDecoder` throws `resourceExhausted` naming the limit,
  /// but `GRPCStreamStateMachine` replaces it with `internalError` ("Failed to decode
  /// message") and `GRPCServerStreamHandler` closes the stream without writing trailers:
  /// the client gets RST_STREAM and reports `unavailable`. When grpc-swift starts answering
  /// with a status, this test fails and `jobctl`'s message can rely on it.
  @Test("a request over 64 KiB is reset by the transport, before any handler", .requires(.cgroups))
  func oversizedRequestIsReset() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let error = await #expect(throws: RPCError.self) {
        try await withJobClient(port: port, files: pki.client("admin")) { client in
          try await client.getJobStatus(
            .with { $0.jobID = String(repeating: "a", count: 100_000) },
            options: testCallOptions)
        }
      }
      #expect(error?.code == .unavailable, "\(String(describing: error))")
      // Just under the limit, the handler answers.
      let handled = await #expect(throws: RPCError.self) {
        try await withJobClient(port: port, files: pki.client("admin")) { client in
          try await client.getJobStatus(
            .with { $0.jobID = String(repeating: "a", count: 60_000) },
            options: testCallOptions)
        }
      }
      #expect(handled?.code == .invalidArgument, "\(String(describing: handled))")
    }
  }
}
