public import GRPCCore
public import Tracing

/// Carries trace context in gRPC metadata (`traceparent`/`tracestate` with the W3C
/// propagator that `--otlp-endpoint` installs), so that a span started in one service has its
/// children in the next. With no tracer bootstrapped both operations do nothing.
public enum TraceContextMetadata {
  /// Adds the trace context of `context` (by default the current one) to `metadata`.
  public static func inject(
    _ context: ServiceContext = .current ?? .topLevel, into metadata: inout Metadata,
    tracer: any Tracer
  ) {
    tracer.inject(context, into: &metadata, using: MetadataInjector())
  }

  /// The context a caller sent in `metadata` (top level when it sent none).
  public static func extract(from metadata: Metadata, tracer: any Tracer) -> ServiceContext {
    var context = ServiceContext.topLevel
    tracer.extract(metadata, into: &context, using: MetadataExtractor())
    return context
  }
}

private struct MetadataInjector: Injector {
  func inject(_ value: String, forKey key: String, into carrier: inout Metadata) {
    carrier.replaceOrAddString(value, forKey: key)
  }
}

private struct MetadataExtractor: Extractor {
  func extract(key: String, from carrier: Metadata) -> String? {
    carrier[stringValues: key].first(where: { _ in true })
  }
}
