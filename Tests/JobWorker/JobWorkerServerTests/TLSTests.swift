import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import JobWorkerProtos
import NIOSSL
import ServiceKit
import TLSKit
import TestSupport
import Testing

/// A stand-in job service that answers `ListJobs` with who the caller is, so the TLS and
/// identity layers can be tested without root: owner = CN, command = role, args = [remotePeer].
final class WhoAmIService: Jobworker_V1_JobWorker.SimpleServiceProtocol, Sendable {
  let peers: PeerRegistry
  init(peers: PeerRegistry) { self.peers = peers }

  func listJobs(
    request: Jobworker_V1_ListJobsRequest, context: ServerContext
  ) async throws -> Jobworker_V1_ListJobsResponse {
    let identity: PeerIdentity
    do {
      identity = try peers.identity(for: context)
    } catch {
      throw RPCError(code: .unauthenticated, message: error.message)
    }
    return .with {
      $0.jobs = [
        .with {
          $0.owner = identity.name
          $0.command = identity.role.rawValue
          $0.args = [context.remotePeer, context.localPeer]
        }
      ]
    }
  }

  func startJob(
    request: Jobworker_V1_StartJobRequest, context: ServerContext
  ) async throws -> Jobworker_V1_StartJobResponse {
    throw RPCError(code: .unimplemented, message: "")
  }
  func stopJob(
    request: Jobworker_V1_StopJobRequest, context: ServerContext
  ) async throws -> Jobworker_V1_StopJobResponse {
    throw RPCError(code: .unimplemented, message: "")
  }
  func getJobStatus(
    request: Jobworker_V1_GetJobStatusRequest, context: ServerContext
  ) async throws -> Jobworker_V1_GetJobStatusResponse {
    throw RPCError(code: .unimplemented, message: "")
  }
  func streamOutput(
    request: Jobworker_V1_StreamOutputRequest,
    response: RPCWriter<Jobworker_V1_StreamOutputResponse>, context: ServerContext
  ) async throws { throw RPCError(code: .unimplemented, message: "") }
}

/// Serves `WhoAmIService` on our mTLS transport on 127.0.0.1:0 while `body` runs.
func withWhoAmIServer(
  pki: TestPKI, _ body: @Sendable (_ port: Int, _ peers: PeerRegistry) async throws -> Void
) async throws {
  let peers = PeerRegistry()
  let factory = try TLSListenerFactory(
    host: "127.0.0.1", port: 0, configuration: pki.serverTLS, registry: peers)
  let transport = TLSServerTransport(listenerFactory: factory)
  let server = GRPCServer(transport: transport, services: [WhoAmIService(peers: peers)])
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await server.serve() }
    let address = try #require(await transport.listeningAddress?.ipv4)
    do {
      try await body(address.port, peers)
    } catch {
      server.beginGracefulShutdown()
      throw error
    }
    server.beginGracefulShutdown()
    try await group.waitForAll()
  }
}

@Suite("Mutual TLS 1.3")
struct TLSTests {
  @Test("admin and user connect over TLS 1.3; identity = CN, role = OU")
  func validClientsConnect() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, _ in
      for (name, role) in [("admin", "admin"), ("alice", "user")] {
        let job = try await withJobClient(port: port, files: pki.client(name)) { client in
          try await client.listJobs(.init(), options: testCallOptions).jobs[0]
        }
        #expect(job.owner == name)
        #expect(job.command == role)
      }
      let outcome = try await probeTLS(
        port: port, configuration: try clientTLSConfiguration(pki: pki, user: "alice"))
      #expect(outcome == .accepted)
    }
  }

  @Test(
    "refused at the handshake (NIOSSL)",
    arguments: [
      ("no client certificate", nil as String?, TLSVersion.tlsv13),
      ("certificate from another CA", "mallory", .tlsv13),
      ("expired certificate", "expired", .tlsv13),
      ("TLS 1.2-only client", "alice", .tlsv12),
    ])
  func refusedAtHandshake(_ what: String, user: String?, maximum: TLSVersion) async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, peers in
      let outcome = try await probeTLS(
        port: port,
        configuration: try clientTLSConfiguration(pki: pki, user: user, maximum: maximum))
      #expect(outcome.isRefused, "\(what): \(outcome)")
      #expect(peers.count == 0)
    }
  }

  @Test("refused clients get no RPC through the gRPC client either")
  func grpcClientRefused() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, _ in
      for name in ["mallory", "expired"] {
        await #expect(throws: RPCError.self, "\(name)") {
          try await withJobClient(port: port, files: pki.client(name)) { client in
            try await client.listJobs(.init(), options: testCallOptions)
          }
        }
      }
    }
  }

  @Test(
    "refused at the handshake (openssl s_client)", .requiresOpenSSL,
    arguments: [
      ("no client certificate", nil as String?, "-tls1_3", "certificate required"),
      ("certificate from another CA", "mallory", "-tls1_3", "unknown ca"),
      ("expired certificate", "expired", "-tls1_3", "certificate expired"),
      ("TLS 1.2-only client", "alice", "-tls1_2", "protocol version"),
    ])
  func opensslRefused(_ what: String, user: String?, version: String, alert: String) async throws {
    let openssl = try #require(TestEnvironment.which("openssl"))
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, _ in
      var arguments = [
        "s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.layout.caCertificate,
        "-alpn", "h2", version, "-ign_eof",
      ]
      if let user {
        arguments += [
          "-cert", pki.layout.certificate(for: user), "-key", pki.layout.key(for: user),
        ]
      }
      let result = try await runProcess(openssl, arguments, timeout: .seconds(10))
      let output = (result.stdout + result.stderr).lowercased()
      #expect(output.contains("alert \(alert)"), "\(what): \(output)")
    }
  }

  @Test("openssl s_client with a valid certificate negotiates TLS 1.3 and h2", .requiresOpenSSL)
  func opensslAccepted() async throws {
    let openssl = try #require(TestEnvironment.which("openssl"))
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, _ in
      let result = try await runProcess(
        openssl,
        [
          "s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", pki.layout.caCertificate,
          "-alpn", "h2", "-cert", pki.layout.certificate(for: "alice"), "-key",
          pki.layout.key(for: "alice"), "-verify_return_error",
        ], timeout: .seconds(10))
      let output = result.stdout + result.stderr
      #expect(output.contains("TLSv1.3"), "\(output)")
      #expect(output.contains("ALPN protocol: h2"), "\(output)")
      #expect(output.contains("Verify return code: 0 (ok)"), "\(output)")
      #expect(!output.lowercased().contains("alert"), "\(output)")
    }
  }
}

@Suite("Peer identity")
struct PeerIdentityTests {
  @Test("forged identity metadata is ignored; remotePeer matches the registry key")
  func forgedMetadataIgnored() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, peers in
      let job = try await withJobClient(port: port, files: pki.client("alice")) { client in
        let forged: Metadata = [
          "x-jobworker-identity": "admin", "x-client-cn": "admin",
          "x-ssl-client-s-dn": "CN=admin,OU=admin",
          "x-forwarded-client-cert": "Subject=\"CN=admin,OU=admin\"",
        ]
        return try await client.listJobs(.init(), metadata: forged, options: testCallOptions).jobs[
          0]
      }
      #expect(job.owner == "alice")
      #expect(job.command == "user")
      // The transport's remotePeer format, which the registry key must equal.
      #expect(job.args[0].hasPrefix("ipv4:127.0.0.1:"))
      #expect(job.args[1] == "ipv4:127.0.0.1:\(port)")
      #expect(peers.count == 0 || peers.count == 1)
    }
  }

  @Test("the registry entry goes away when the connection closes")
  func registryEmptiedOnClose() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withWhoAmIServer(pki: pki) { port, peers in
      _ = try await withJobClient(port: port, files: pki.client("alice")) { client in
        try await client.listJobs(.init(), options: testCallOptions)
      }
      let deadline = ContinuousClock.now + .seconds(5)
      while peers.count > 0 && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
      }
      #expect(peers.count == 0)
    }
  }

  @Test("identity needs exactly one CN and an admin|user|gateway OU")
  func identityRules() throws {
    let ca = try CertificateAuthority.create()
    let alice = try ca.issueClient(name: "alice", role: .user)
    #expect(
      try PeerIdentity(certificate: alice.certificate) == PeerIdentity(name: "alice", role: .user))
    let gateway = try ca.issueClient(name: "gateway-1", role: .gateway)
    #expect(
      try PeerIdentity(certificate: gateway.certificate)
        == PeerIdentity(name: "gateway-1", role: .gateway))
    // A server certificate has no OU: no role, refused.
    let server = try ca.issueServer(hosts: ["localhost"])
    #expect(throws: PeerIdentityError.self) { try PeerIdentity(certificate: server.certificate) }
    #expect(throws: CertificateError.self) { try ca.issueClient(name: "a b", role: .user) }
    #expect(!PeerIdentity.isValidName(""))
    #expect(!PeerIdentity.isValidName(String(repeating: "a", count: 65)))
  }

  @Test("key files are 0600, certificates 0644")
  func filePermissions() throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    let key = try FileManager.default.attributesOfItem(atPath: pki.layout.key(for: "alice"))
    let cert = try FileManager.default.attributesOfItem(
      atPath: pki.layout.certificate(for: "alice"))
    #expect((key[.posixPermissions] as? Int) == 0o600)
    #expect((cert[.posixPermissions] as? Int) == 0o644)
  }
}
