import ArgumentParser
import CounterGateway
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceKit
import TLSKit
import Telemetry

/// The gateway: holds clients' presence streams, pings them every second and reports who
/// answered to the status service.
@main
struct GatewayCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "gateway",
    abstract: "Holds client streams, pings them every second, reports presence to status.")

  @Option(help: "gRPC listen address (env: GATEWAY_LISTEN).")
  var listen: HostPort = Environment.value(
    "GATEWAY_LISTEN", default: HostPort(host: "0.0.0.0", port: 50051))

  @Option(help: "Prometheus /metrics listen address (env: GATEWAY_METRICS_LISTEN).")
  var metricsListen: HostPort = Environment.value(
    "GATEWAY_METRICS_LISTEN", default: HostPort(host: "0.0.0.0", port: 9101))

  @Option(help: "Status service endpoints, HOST:PORT[,HOST:PORT…] (env: GATEWAY_STATUS).")
  var status: HostPortList = Environment.value(
    "GATEWAY_STATUS", default: HostPortList([HostPort(host: "127.0.0.1", port: 50052)]))

  @Option(
    parsing: .unconditional,
    help: "Seconds without a pong before a client is disconnected (env: GATEWAY_PONG_TIMEOUT).")
  var pongTimeout: Int = Environment.value("GATEWAY_PONG_TIMEOUT", default: 5)

  @Option(
    parsing: .unconditional,
    help: "Most client streams held at once; more are refused (env: GATEWAY_MAX_CLIENTS).")
  var maxClients: Int = Environment.value("GATEWAY_MAX_CLIENTS", default: 100_000)

  @Option(
    parsing: .unconditional,
    help: """
      Seconds between reports of a connected user to status: its first EVEN/ODD pong is \
      reported at once, then one every this often, and its last when it leaves; 0 reports \
      every pong (env: GATEWAY_PRESENCE_REFRESH).
      """)
  var presenceRefresh: Int = Environment.value("GATEWAY_PRESENCE_REFRESH", default: 10)

  @Option(help: "Gateway id reported to status, for logs (env: GATEWAY_ID; default: host name).")
  var gatewayID: String = Environment.string(
    "GATEWAY_ID", default: ProcessInfo.processInfo.hostName)

  @Option(help: "Serve clients TLS 1.3 with this certificate chain, PEM (env: GATEWAY_TLS_CERT).")
  var tlsCert = Environment.string("GATEWAY_TLS_CERT", default: "")

  @Option(help: "Key of --tls-cert, PEM (env: GATEWAY_TLS_KEY).")
  var tlsKey = Environment.string("GATEWAY_TLS_KEY", default: "")

  @Option(help: "Require client certificates signed by this CA (env: GATEWAY_TLS_CLIENT_CA).")
  var tlsClientCA = Environment.string("GATEWAY_TLS_CLIENT_CA", default: "")

  @Option(help: "Connect to status over TLS, verified with this CA (env: GATEWAY_STATUS_CA).")
  var statusCA = Environment.string("GATEWAY_STATUS_CA", default: "")

  @Option(help: "Client certificate for mutual TLS to status (env: GATEWAY_STATUS_CERT).")
  var statusCert = Environment.string("GATEWAY_STATUS_CERT", default: "")

  @Option(help: "Key of --status-cert (env: GATEWAY_STATUS_KEY).")
  var statusKey = Environment.string("GATEWAY_STATUS_KEY", default: "")

  @OptionGroup var connections: ConnectionOptions
  @OptionGroup var healthCheck: HealthCheckOptions
  @OptionGroup var tracing: TracingOptions
  @OptionGroup var logging: LoggingOptions
  @OptionGroup var shutdown: ShutdownOptions

  func validate() throws {
    guard (1...3600).contains(pongTimeout) else {
      throw ValidationError("--pong-timeout must be between 1 and 3600 seconds")
    }
    guard maxClients >= 1 else { throw ValidationError("--max-clients must be at least 1") }
    guard (0...60).contains(presenceRefresh) else {
      throw ValidationError(
        "--presence-refresh must be between 0 and 60 seconds (well within the 180 s window)")
    }
    _ = try security()
  }

  /// The client port's TLS and the connections to status, from the flags.
  func security() throws -> (server: ServerTLSConfiguration?, status: ClientSecurity) {
    do {
      return (
        try ServerTLSConfiguration.from(
          certificatePath: tlsCert.nilIfEmpty, keyPath: tlsKey.nilIfEmpty,
          clientCAPath: tlsClientCA.nilIfEmpty, prefix: "tls"),
        try ClientSecurity.from(
          caPath: statusCA.nilIfEmpty, certificatePath: statusCert.nilIfEmpty,
          keyPath: statusKey.nilIfEmpty, prefix: "status")
      )
    } catch { throw ValidationError(error.message) }
  }

  func run() async throws {
    try await healthCheck.runIfRequested(listen: listen)
    let security = try security()
    logging.bootstrap()
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    let logger = Logger(label: "gateway")
    // Before the build, so that every component picks up the tracer (a no-op when off).
    let exporter = try tracing.bootstrap(serviceName: "gateway", logger: logger)

    var configuration = GatewayServer.Configuration(
      listen: listen, gatewayID: gatewayID, statusEndpoints: status.endpoints)
    configuration.tls = security.server
    configuration.reporter.security = security.status
    configuration.gateway.pongTimeout = .seconds(pongTimeout)
    configuration.gateway.maxClients = maxClients
    configuration.gateway.presenceRefresh = .seconds(presenceRefresh)
    configuration.connectionLimits = connections.prepare(logger: logger)
    let gateway = try GatewayServer.build(configuration: configuration, logger: logger)
    let metrics = try await MetricsServer.bind(
      to: metricsListen, registry: registry, logger: logger)
    // Shutdown runs in reverse: the gateway's own services first (see
    // `GatewayServer.services`), then /metrics; the span exporter stops last, flushing the
    // spans of the final presence flush.
    try await ServerRunner.run(
      services: [exporter].compactMap { $0 } + [metrics] + gateway.services,
      shutdown: shutdown, logger: logger)
  }
}
