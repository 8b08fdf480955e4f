public import ArgumentParser
public import Logging
import OTel
import ServiceKit
public import ServiceLifecycle

/// `--otlp-endpoint`: distributed tracing, off by default.
///
/// When set, spans go with OTLP/gRPC (batched, in the background) to that endpoint, e.g. an
/// OpenTelemetry collector at `http://otel-collector:4317`, and trace context travels between
/// our services as W3C `traceparent` metadata. The standard `OTEL_*` environment variables
/// (sampler, batch sizes, headers, TLS files) tune the exporter; logs and metrics stay on
/// their own backends (stderr and Prometheus).
public struct TracingOptions: ParsableArguments, Sendable {
  @Option(
    help: """
      Export traces with OTLP/gRPC to this URL (http:// or https://); empty: no tracing \
      (env: OTEL_EXPORTER_OTLP_ENDPOINT).
      """)
  public var otlpEndpoint = Environment.string("OTEL_EXPORTER_OTLP_ENDPOINT", default: "")

  public init() {}

  public func validate() throws {
    guard let endpoint = otlpEndpoint.nilIfEmpty else { return }
    guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
      throw ValidationError("--otlp-endpoint must start with http:// or https://, got \(endpoint)")
    }
  }

  /// Installs the process-wide tracer when an endpoint is set, and returns the service that
  /// exports spans (run it first in the service group, so that it stops last and flushes);
  /// `nil` when tracing is off. Call once, right after logging is bootstrapped.
  public func bootstrap(serviceName: String, logger: Logger) throws -> (any Service)? {
    guard let endpoint = otlpEndpoint.nilIfEmpty else { return nil }
    var config = OTel.Configuration.default
    config.serviceName = serviceName
    config.diagnosticLogger = .custom(logger)
    config.propagators = [.traceContext]
    config.logs.enabled = false
    config.metrics.enabled = false
    config.traces.enabled = true
    config.traces.exporter = .otlp
    config.traces.otlpExporter.protocol = .grpc
    config.traces.otlpExporter.endpoint = endpoint
    config.traces.otlpExporter.timeout = .seconds(5)
    let service = try OTel.bootstrap(configuration: config)
    logger.info("exporting traces", metadata: ["tracing.endpoint": "\(endpoint)"])
    return service
  }
}
