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
  @Test(
    "a request over 64 KiB is answered RESOURCE_EXHAUSTED naming the limit; over 128 KiB the transport resets it",
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
      // Over the API's limit: a clear answer, before any handler.
      let refused = await status(jobIDBytes: 100_000)
      #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")
      #expect(
        refused?.message.contains("100004 bytes is over this server's limit of 65536 bytes")
          == true, "\(String(describing: refused))")
      // Over the transport's bound (what one message may make the server buffer): reset.
      let reset = await status(jobIDBytes: 140_000)
      #expect(reset?.code == .unavailable, "\(String(describing: reset))")
      // Just under the limit, the handler answers.
      let handled = await status(jobIDBytes: 60_000)
      #expect(handled?.code == .invalidArgument, "\(String(describing: handled))")
    }
  }
}
