import CounterClient
import GRPCCore
import InMemoryTracing
import ServiceKit
import TestSupport
import Testing
import Tracing

/// The spans a presence report produces, and that its trace context crosses from gateway to
/// status in the gRPC metadata, so one trace holds flush → report → ingest → store write.
@Suite struct TracingTests {
  @Test func presenceReportIsOneTraceFromGatewayToTheStore() async throws {
    let tracer = InMemoryTracer()
    let ids = ["traced-0", "traced-1", "traced-2"]
    try await CounterStack.with(tracer: tracer) { status, gateway, _ in
      let client = CounterClient(
        configuration: .init(ids: ids, gateways: [gateway]), logger: Harness.logger)
      try await Harness.withClient(client) {
        let counted = await eventually {
          (try? await Harness.fetchCount(from: status)) == UInt64(ids.count)
        }
        #expect(counted)
      }
    }
    // Every server has stopped: all spans, streams included, have ended.
    let spans = tracer.finishedSpans
    let named = { (name: String) in spans.filter { $0.operationName == name } }

    let ingests = named("presence.ingest")
    try #require(!ingests.isEmpty, "no ingest span among \(spans.map(\.operationName))")
    for ingest in ingests {
      // Its parent is a gateway report span, in the same trace: the context crossed the wire.
      let report = try #require(
        named("presence.report").first { $0.spanID == ingest.parentSpanID },
        "ingest span without its gateway parent")
      #expect(report.traceID == ingest.traceID)
      #expect(report.kind == .client && ingest.kind == .server)
      let flush = try #require(named("presence.flush").first { $0.spanID == report.parentSpanID })
      #expect(flush.traceID == report.traceID)
      // The store write happened inside the ingest span.
      let write = named("presence.store.write").first { $0.parentSpanID == ingest.spanID }
      #expect(write?.attributes["db.system"]?.toSpanAttribute() == "sqlite")
    }
    let users = ingests.compactMap { $0.attributes["presence.records"]?.toSpanAttribute() }
    #expect(!users.isEmpty)

    // One stream span per client, ended when the gateway drained it.
    let streams = named("gateway.stream")
    let streamed = streams.compactMap { span -> String? in
      guard case .string(let id) = span.attributes["client.id"]?.toSpanAttribute() else {
        return nil
      }
      return id
    }
    #expect(Set(streamed) == Set(ids))
    #expect(streams.allSatisfy { $0.kind == .server })

    // Reads: the RPC span with the store read beneath it.
    let reads = named("status.fetch_online_users")
    #expect(!reads.isEmpty)
    #expect(
      reads.contains { read in
        named("presence.store.read").contains { $0.parentSpanID == read.spanID }
      })
  }

  @Test func contextRoundTripsThroughMetadata() {
    let tracer = InMemoryTracer()
    let span = tracer.startSpan("caller")
    var metadata: GRPCCore.Metadata = ["client-id": "x"]
    TraceContextMetadata.inject(span.context, into: &metadata, tracer: tracer)
    let received = TraceContextMetadata.extract(from: metadata, tracer: tracer)
    let child = tracer.startSpan("callee", context: received)
    #expect(child.traceID == span.traceID)
    #expect(child.parentSpanID == span.spanID)
    // Nothing sent, nothing extracted: the callee starts a new trace.
    let orphan = tracer.startSpan(
      "orphan", context: TraceContextMetadata.extract(from: [:], tracer: tracer))
    #expect(orphan.parentSpanID == nil)
  }
}
