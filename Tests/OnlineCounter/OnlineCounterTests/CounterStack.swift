import CounterGateway
import ServiceKit
import TLSKit
import TestSupport
import Tracing

/// One status server and one gateway reporting to it, on loopback (``Harness/withStatus`` and
/// ``Harness/withGateway``), with the knobs tests turn: transport security and the tracer.
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
    try await Harness.withStatus(
      storeURL: Harness.temporaryStoreURL(), tls: security.status, tracer: tracer
    ) { status, _ in
      try await Harness.withGateway(
        status: [status], tls: security.gateway, statusSecurity: security.gatewayToStatus,
        tracer: tracer
      ) { gateway, _, reporter, _ in
        try await body(status, gateway, reporter)
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
      gatewayToStatus: gatewayToStatus ?? .mutualTLS(pki.client("gateway")))
  }
}
