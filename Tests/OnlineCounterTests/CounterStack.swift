import CounterProtos
import GatewayService
import PresenceStore
import ServiceKit
import StatusService
import TLSKit
import TestSupport
import Testing
import Tracing

/// One status server and one gateway reporting to it, on loopback, built the way the
/// binaries build them, with the knobs tests turn: transport security and the tracer.
enum CounterStack {
  struct Security {
    var status: ServerTLSConfiguration?
    var gateway: ServerTLSConfiguration?
    var gatewayToStatus: ClientSecurity
    static let plaintext = Security(status: nil, gateway: nil, gatewayToStatus: .plaintext)
  }

  /// Runs both for the duration of `body`, which gets their addresses and the reporter.
  static func with(
    security: Security = .plaintext, tracer: any Tracer = NoOpTracer(),
    _ body: (_ status: HostPort, _ gateway: HostPort, PresenceReporter) async throws -> Void
  ) async throws {
    let logger = Harness.logger
    let store = try await makePresenceStore(
      url: "sqlite:\(Harness.temporaryStorePath())", logger: logger, tracer: tracer)
    let status = try GRPCServerService(
      name: "status", address: HostPort(host: Harness.loopback, port: 0),
      services: [
        StatusReader(store: store, logger: logger, tracer: tracer),
        PresenceIngest(store: store, logger: logger, tracer: tracer),
      ],
      tls: security.status, logger: logger)
    try await Harness.withServices([store, status]) {
      let statusAddress = try #require(await status.listeningAddress)
      var reporting = PresenceReporter.Configuration(
        gatewayID: "stack", endpoints: [statusAddress])
      reporting.flushInterval = .milliseconds(200)
      reporting.callTimeout = .seconds(1)
      reporting.maxBackoff = .milliseconds(400)
      reporting.finalFlushBudget = .milliseconds(500)
      reporting.security = security.gatewayToStatus
      let reporter = try PresenceReporter(
        configuration: reporting, logger: logger, tracer: tracer)
      let standard = try StandardServices(
        serving: [Gateway.serviceName],
        descriptorSets: [CounterDescriptors.fileDescriptorSetBase64])
      let gateway = Gateway(
        configuration: .init(), reporter: reporter, health: standard.health, logger: logger,
        tracer: tracer)
      let gatewayServer = try GRPCServerService(
        name: "gateway", address: HostPort(host: Harness.loopback, port: 0),
        services: [gateway] + standard.all, tls: security.gateway, logger: logger)
      try await Harness.withServices([reporter, gatewayServer, gateway]) {
        let gatewayAddress = try #require(await gatewayServer.listeningAddress)
        try await body(statusAddress, gatewayAddress, reporter)
      }
    }
  }
}

extension CounterStack.Security {
  /// Production's setup: TLS to clients, mutual TLS between gateway and status.
  static func secured(_ pki: TestPKI, gatewayToStatus: ClientSecurity? = nil) -> Self {
    Self(
      status: pki.serverTLS,
      gateway: ServerTLSConfiguration(
        certificatePath: pki.layout.serverCertificate, keyPath: pki.layout.serverKey,
        clientCAPath: nil),
      gatewayToStatus: gatewayToStatus ?? .mutualTLS(pki.client("alice")))
  }
}
