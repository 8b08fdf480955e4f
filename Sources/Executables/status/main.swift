import ArgumentParser
import CounterStatus
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceKit
import TLSKit
import Telemetry

/// The status service: answers `StatusReader.FetchOnlineUsersInLast3Mins` and ingests the
/// gateways' presence batches into the presence store.
@main
struct StatusServerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "Counts users online in the last 3 minutes, from gateways' presence reports.")

  @Option(help: "gRPC listen address (env: STATUS_LISTEN).")
  var listen: HostPort = Environment.value(
    "STATUS_LISTEN", default: HostPort(host: "0.0.0.0", port: 50052))

  @Option(help: "Prometheus /metrics listen address (env: STATUS_METRICS_LISTEN).")
  var metricsListen: HostPort = Environment.value(
    "STATUS_METRICS_LISTEN", default: HostPort(host: "0.0.0.0", port: 9102))

  @Option(help: "Presence store: sqlite:PATH or postgres://… (env: STATUS_STORE).")
  var store: String = Environment.string("STATUS_STORE", default: "sqlite:./data/status.sqlite")

  @Option(help: "Serve TLS 1.3 with this certificate chain, PEM (env: STATUS_TLS_CERT).")
  var tlsCert = Environment.string("STATUS_TLS_CERT", default: "")

  @Option(help: "Key of --tls-cert, PEM (env: STATUS_TLS_KEY).")
  var tlsKey = Environment.string("STATUS_TLS_KEY", default: "")

  @Option(
    help: "Require client certificates signed by this CA: mutual TLS (env: STATUS_TLS_CLIENT_CA).")
  var tlsClientCA = Environment.string("STATUS_TLS_CLIENT_CA", default: "")

  @Option(
    parsing: .unconditional,
    help: "Seconds a count may be served from cache; 0 disables (env: STATUS_COUNT_CACHE).")
  var countCache: Double = Environment.value("STATUS_COUNT_CACHE", default: 1)

  @OptionGroup var connections: ConnectionOptions
  @OptionGroup var healthCheck: HealthCheckOptions
  @OptionGroup var tracing: TracingOptions
  @OptionGroup var logging: LoggingOptions
  @OptionGroup var shutdown: ShutdownOptions

  func validate() throws {
    guard (0...1).contains(countCache) else {
      throw ValidationError("--count-cache must be between 0 and 1 second (the API allows 1 s)")
    }
    _ = try tls()
  }

  func tls() throws -> ServerTLSConfiguration? {
    do {
      return try ServerTLSConfiguration.from(
        certificatePath: tlsCert.nilIfEmpty, keyPath: tlsKey.nilIfEmpty,
        clientCAPath: tlsClientCA.nilIfEmpty, prefix: "tls")
    } catch { throw ValidationError(error.message) }
  }

  func run() async throws {
    try await healthCheck.runIfRequested(listen: listen)
    logging.bootstrap()
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    let logger = Logger(label: "status")
    // Before the build, so that every component picks up the tracer (a no-op when off).
    let exporter = try tracing.bootstrap(serviceName: "status", logger: logger)

    var configuration = StatusServer.Configuration(listen: listen, storeURL: store)
    configuration.tls = try tls()
    configuration.connectionLimits = connections.prepare(logger: logger)
    configuration.countCacheMaxAge = countCache > 0 ? .milliseconds(Int(countCache * 1000)) : nil
    let status = try await StatusServer.build(configuration: configuration, logger: logger)
    let metrics = try await MetricsServer.bind(
      to: metricsListen, registry: registry, logger: logger)
    // Shutdown runs in reverse: the status service's own services first (see
    // `StatusServer.services`), then /metrics and the span exporter.
    try await ServerRunner.run(
      services: [exporter].compactMap { $0 } + [metrics] + status.services,
      shutdown: shutdown, logger: logger)
  }
}
