import CounterClient
import CounterModel
import Foundation
import GRPCCore
import ServiceKit
import TLSKit
import TestSupport
import Testing

/// TLS on the gateway's client port and mutual TLS between gateway and status, as the
/// `--tls-*` and `--status-*` flags set them up, with certificates from our own tooling.
@Suite struct TransportSecurityTests {
  @Test func clientsOverTLSAreCountedThroughMutualTLS() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await CounterStack.with(security: .secured(pki)) { status, gateway, _ in
      var config = CounterClient.Configuration(
        ids: (0..<5).map { "tls-\($0)" }, gateways: [gateway])
      config.security = .tls(caPath: pki.layout.caCertificate)
      let client = CounterClient(configuration: config, logger: Harness.logger)
      try await Harness.withClient(client) {
        let reader = ClientSecurity.mutualTLS(pki.client("bob"))
        let counted = await eventually {
          (try? await Harness.fetchCount(from: status, security: reader)) == 5
        }
        #expect(counted)
      }
    }
  }

  @Test func peersWithoutTheRightCredentialsAreRefused() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    // The gateway talks TLS to status but has no client certificate: nothing gets through.
    try await CounterStack.with(
      security: .secured(pki, gatewayToStatus: .tls(caPath: pki.layout.caCertificate))
    ) { status, gateway, reporter in
      // A plaintext client, and one that trusts another CA, cannot reach the gateway.
      // Refused at connection set-up (UNAVAILABLE) however long that takes; the deadline
      // only bounds a failing test.
      let plaintext = try await Harness.rawStream(
        gateway: gateway, metadata: Harness.clientID("plain"), answer: .even, pings: 1,
        timeout: .seconds(20))
      #expect(plaintext.error?.code == .unavailable, "\(String(describing: plaintext.error))")
      await #expect(throws: RPCError.self) {
        _ = try await HealthProbe.check(
          gateway, security: .tls(caPath: "\(pki.directory)/other-ca.pem")
        ).get()
      }
      // A TLS client gets in and is pinged, but its presence cannot reach status.
      var config = CounterClient.Configuration(ids: ["stuck"], gateways: [gateway])
      config.security = .tls(caPath: pki.layout.caCertificate)
      let client = CounterClient(configuration: config, logger: Harness.logger)
      try await Harness.withClient(client) {
        #expect(await eventually { client.stats.connected == 1 })
        #expect(await eventually { reporter.pendingCount == 1 })
        // Readers need a certificate too; one from our CA reads zero.
        await #expect(throws: RPCError.self) {
          _ = try await Harness.fetchCount(
            from: status, security: .tls(caPath: pki.layout.caCertificate))
        }
        let count = try await Harness.fetchCount(
          from: status, security: .mutualTLS(pki.client("bob")))
        #expect(count == 0)
        // An expired client certificate is refused at the handshake.
        await #expect(throws: RPCError.self) {
          _ = try await Harness.fetchCount(
            from: status, security: .mutualTLS(pki.client("expired")))
        }
      }
    }
  }

  /// Readers and gateways share the CA; before roles, a reader's certificate could write
  /// presence (fill the store with made-up users).
  @Test func onlyAGatewayCertificateMayReportPresence() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await CounterStack.with(security: .secured(pki)) { status, _, _ in
      let now = systemMillisClock()
      let refused = await #expect(throws: RPCError.self) {
        _ = try await Harness.report(
          [("made-up", now)], to: status, security: .mutualTLS(pki.client("bob")))
      }
      #expect(refused?.code == .permissionDenied, "\(String(describing: refused))")
      #expect(refused?.message.contains("role gateway") == true)
      let accepted = try await Harness.report(
        [("real", now)], to: status, security: .mutualTLS(pki.client("gateway")))
      #expect(accepted.rejected == 0)
      let reader = ClientSecurity.mutualTLS(pki.client("bob"))
      #expect(try await Harness.fetchCount(from: status, security: reader) == 1)
    }
  }

  @Test func healthProbeSpeaksTLS() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await CounterStack.with(security: .secured(pki)) { _, gateway, _ in
      // A generous deadline: the answer is under test, not its latency on a loaded machine.
      let viaTLS = await HealthProbe.check(
        gateway, security: .tls(caPath: pki.layout.caCertificate), timeout: .seconds(20))
      #expect((try? viaTLS.get()) == .serving, "\(viaTLS)")
      guard case .failure(let error) = await HealthProbe.check(gateway, timeout: .seconds(20))
      else {
        Issue.record("a plaintext probe of a TLS server succeeded")
        return
      }
      #expect((error as? RPCError)?.code == .unavailable, "\(error)")
    }
  }
}
