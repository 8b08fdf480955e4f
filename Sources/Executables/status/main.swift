import ArgumentParser
import CounterProtos
import Foundation
import Logging
import Metrics
import PresenceStore
import Prometheus
import ServiceKit
import ServiceLifecycle
import StatusService

/// The status service: answers `StatusReader.FetchOnlineUsersInLast3Mins` and ingests the
/// gateways' presence batches into the presence store.
@main
struct StatusCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "Counts users online in the last 3 minutes, from gateways' presence reports.")

  @Option(help: "gRPC listen address (env: STATUS_LISTEN).")
  var listen: HostPort = Environment.value("STATUS_LISTEN", default: HostPort(host: "0.0.0.0", port: 50052))

  @Option(help: "Prometheus /metrics listen address (env: STATUS_METRICS_LISTEN).")
  var metricsListen: HostPort = Environment.value(
    "STATUS_METRICS_LISTEN", default: HostPort(host: "0.0.0.0", port: 9102))

  @Option(help: "Presence store: sqlite:PATH or postgres://… (env: STATUS_STORE).")
  var store: String = Environment.string("STATUS_STORE", default: "sqlite:./data/status.sqlite")

  @Flag(help: "Probe the gRPC health of the server at --listen, exit 0 if serving, else 1.")
  var healthCheck = false

  @OptionGroup var logging: LoggingOptions
  @OptionGroup var shutdown: ShutdownOptions

  func run() async throws {
    if healthCheck { await HealthProbe.exitWithHealthOf(listen: listen) }
    logging.bootstrap()
    let registry = PrometheusCollectorRegistry()
    MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    let logger = Logger(label: "status")

    let presence = try await makePresenceStore(url: store, logger: logger)
    let standard = try StandardServices(
      serving: [StatusReader.serviceName, PresenceIngest.serviceName],
      descriptorSets: [CounterDescriptors.fileDescriptorSetBase64])
    let server = GRPCServerService(
      name: "status", address: listen,
      services: [
        StatusReader(store: presence, logger: logger),
        PresenceIngest(store: presence, logger: logger),
      ] + standard.all,
      config: GRPCServerService.hardenedConfig(maxRequestBytes: 4 * 1024 * 1024),
      logger: logger)
    let metrics = try await MetricsServer.bind(to: metricsListen, registry: registry, logger: logger)
    // Shut down in reverse: the server stops first, the store closes last.
    try await ServerRunner.run(
      services: [presence, PresencePruner(store: presence, logger: logger), metrics, server],
      shutdown: shutdown, logger: logger)
  }
}
