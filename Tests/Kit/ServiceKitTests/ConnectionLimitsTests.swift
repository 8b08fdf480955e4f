import ConnectionKit
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import ServiceKit
import ServiceKitProtos
import Synchronization
import TLSKit
import TestSupport
import Testing

/// Hostile peers against a real server on loopback: connections that never speak are closed
/// after the handshake timeout, connections over a cap are closed at once, and real clients
/// keep being served throughout. Each runs over plaintext and over mutual TLS (where a silent
/// peer never sends its ClientHello).
@Suite struct ConnectionLimitsTests {
  static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

  enum Security: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case plaintext, mutualTLS
    var testDescription: String { rawValue }
  }

  @Test(
    "silent connections are closed after the handshake timeout; a real client's stream lives on",
    arguments: Security.allCases)
  func silentConnectionsAreClosed(security: Security) async throws {
    // 6 s, not 1 or 3: the real client's own connections (the watch, the probe) must also
    // finish their handshake within it while parallel tests load the machine; they take
    // milliseconds alone, but 1 s failed once in 20 runs and 3 s once in a fresh-clone CI run
    // (the probe's connection closed before its HTTP/2 preface).
    let handshakeTimeout = Duration.seconds(6)
    try await withServer(
      security: security, limits: ConnectionLimits(handshakeTimeout: handshakeTimeout)
    ) { address, client, standard in
      try await withHealthWatch(address, security: client) { watch in
        #expect(try await watch.next() == .serving)
        // A few hundred: enough to show the mechanism, within a test's share of descriptors.
        let silent = try await SilentConnections.open(200, to: address)
        // Without the guard they would stay open and hold up the server's graceful shutdown.
        defer { silent.close() }
        // Each is closed `handshakeTimeout` after the server accepted it, which is after the
        // client saw it established. The wait ends as soon as all are closed; its bound is
        // generous (27 s over the deadline): with 9 s, 74 of 200 were still open once in a CI
        // run whose 2 cores were shared with a release build. Closed early is checked below.
        #expect(await eventually(timeout: handshakeTimeout + .seconds(27)) { silent.allClosed })
        let lifetimes = silent.lifetimes.compactMap { $0 }
        #expect(lifetimes.count == 200)
        // Not long before the deadline: the deadline closed them, not something else. The
        // server's clock starts at accept, after the client's connect completed, but the two
        // event loops note those moments late by however busy they are: half the deadline
        // is the margin for that.
        #expect(lifetimes.allSatisfy { $0 >= handshakeTimeout / 2 })
        // The real client's connection outlived the deadline many times over: its stream
        // still carries updates, and new calls are served.
        standard.health.markAllNotServing()
        #expect(try await watch.next() == .notServing)
        #expect(
          try await HealthProbe.check(address, security: client, timeout: .seconds(20)).get()
            == .notServing)
      }
    }
  }

  @Test(
    "connections over the per-address cap are closed at once while earlier ones work",
    arguments: Security.allCases)
  func perAddressCap(security: Security) async throws {
    // The handshake timeout is far away, so only the cap can close a connection quickly.
    let limits = ConnectionLimits(handshakeTimeout: .seconds(120), maxConnectionsPerAddress: 3)
    try await withServer(security: security, limits: limits) { address, client, standard in
      try await withHealthWatch(address, security: client) { watch in
        #expect(try await watch.next() == .serving)
        // The watch holds one connection; two silent ones fill the cap.
        let held = try await SilentConnections.open(2, to: address)
        let over = try await SilentConnections.open(3, to: address)
        defer {
          held.close()
          over.close()
        }
        // Closed on accept; 30 s bounds a loaded machine (10 s was hit under `stress-ng`), far
        // below the 120 s deadline.
        #expect(await eventually(timeout: .seconds(30)) { over.allClosed })
        #expect(!held.anyClosed)
        // So is a real client's new connection, while the cap is full.
        let refused = await HealthProbe.check(address, security: client, timeout: .seconds(2))
        #expect(throws: (any Error).self) { try refused.get() }
        // The connection that was there first still works.
        standard.health.markAllNotServing()
        #expect(try await watch.next() == .notServing)
        // A closed connection frees its slot (once the server has seen it close).
        held.close()
        #expect(
          await eventually {
            await (try? HealthProbe.check(address, security: client).get()) == .notServing
          })
      }
    }
  }

  @Test("connections over the total cap are closed at once")
  func totalCap() async throws {
    let limits = ConnectionLimits(handshakeTimeout: .seconds(120), maxConnections: 5)
    try await withServer(security: .plaintext, limits: limits) { address, client, _ in
      let held = try await SilentConnections.open(5, to: address)
      let over = try await SilentConnections.open(3, to: address)
      defer {
        held.close()
        over.close()
      }
      #expect(await eventually(timeout: .seconds(30)) { over.allClosed })
      #expect(!held.anyClosed)
      held.close()
      #expect(
        await eventually {
          await (try? HealthProbe.check(address, security: client).get()) == .serving
        })
    }
  }

  /// Runs a server with the standard services on 127.0.0.1:0 for the duration of `body`.
  func withServer(
    security: Security, limits: ConnectionLimits,
    _ body: @Sendable (HostPort, ClientSecurity, StandardServices) async throws -> Void
  ) async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    let standard = try StandardServices(serving: [], descriptorSets: [])
    let service = try GRPCServerService(
      name: "test", address: HostPort(host: "127.0.0.1", port: 0), services: standard.all,
      tls: security == .mutualTLS ? pki.serverTLS : nil, connectionLimits: limits,
      logger: Self.logger)
    let client: ClientSecurity =
      security == .mutualTLS ? .mutualTLS(pki.client("alice")) : .plaintext
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await service.serveUntilStopped() }
      let address = try #require(await service.listeningAddress)
      do {
        try await body(address, client, standard)
      } catch {
        service.beginGracefulShutdown()
        throw error
      }
      standard.health.endWatches()
      service.beginGracefulShutdown()
      try await group.waitForAll()
    }
  }

  /// Regression: NIO's default backlog (128) made the kernel drop 3,537 of 10,000 clients
  /// connecting at 5,000 a second (Benchmarks/gateway-scale.sh, one connection per client).
  @Test(
    "the listener's accept queue holds a reconnect storm: the backlog is 4,096 (or somaxconn)",
    .requires(.tool("ss", install: "apt-get install iproute2")))
  func acceptBacklog() async throws {
    try await withServer(security: .plaintext, limits: ConnectionLimits()) { address, _, _ in
      let result = try await runProcess(
        TestEnvironment.which("ss")!, ["-Hltn", "sport = :\(address.port)"])
      // `LISTEN 0 4096 127.0.0.1:PORT 0.0.0.0:*`: for a listener, Send-Q is its backlog.
      let fields = result.output.split(whereSeparator: \.isWhitespace)
      let somaxconn = try String(contentsOfFile: "/proc/sys/net/core/somaxconn", encoding: .utf8)
        .trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(
        fields.count >= 3 && Int(fields[2]) == min(4_096, Int(somaxconn) ?? 4_096),
        "ss: \(result.output)")
    }
  }

  /// Runs `body` with a health Watch stream open on its own connection.
  func withHealthWatch(
    _ address: HostPort, security: ClientSecurity,
    _ body: @escaping @Sendable (HealthWatch) async throws -> Void
  ) async throws {
    let transport = try HTTP2ClientTransport.Posix(
      target: address.resolvableTarget, transportSecurity: security.transportSecurity)
    try await withGRPCClient(transport: transport) { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      try await health.watch(.with { $0.service = "" }) { response in
        try await body(HealthWatch(messages: response.messages.makeAsyncIterator()))
      }
    }
  }
}

/// The statuses a health Watch stream delivers, one at a time.
final class HealthWatch: @unchecked Sendable {
  // Used by one test task at a time.
  private var messages:
    RPCAsyncSequence<Grpc_Health_V1_HealthCheckResponse, any Error>.AsyncIterator

  init(
    messages: RPCAsyncSequence<Grpc_Health_V1_HealthCheckResponse, any Error>.AsyncIterator
  ) {
    self.messages = messages
  }

  func next() async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? {
    try await messages.next()?.status
  }
}

/// TCP connections that never send a byte, and when the server closed each.
final class SilentConnections: Sendable {
  private let channels: [any Channel]
  private let closedAfter: Mutex<[Duration?]>

  private init(channels: [any Channel], opened: [ContinuousClock.Instant]) {
    self.channels = channels
    self.closedAfter = Mutex(Array(repeating: nil, count: channels.count))
    for (index, channel) in channels.enumerated() {
      channel.closeFuture.whenComplete { [self] _ in
        let lifetime = ContinuousClock.now - opened[index]
        self.closedAfter.withLock { $0[index] = lifetime }
      }
    }
  }

  static func open(_ count: Int, to address: HostPort) async throws -> SilentConnections {
    var channels: [any Channel] = []
    var opened: [ContinuousClock.Instant] = []
    for _ in 0..<count {
      // The time is read on the event loop as the connection completes, not when this task
      // next runs.
      let (channel, established) = try await ClientBootstrap(
        group: MultiThreadedEventLoopGroup.singleton
      )
      .connect(host: address.host, port: address.port)
      .map { ($0, ContinuousClock.now) }.get()
      opened.append(established)
      channels.append(channel)
    }
    return SilentConnections(channels: channels, opened: opened)
  }

  /// How long after being established each was closed; nil while open.
  var lifetimes: [Duration?] { closedAfter.withLock { $0 } }
  var allClosed: Bool { lifetimes.allSatisfy { $0 != nil } }
  var anyClosed: Bool { lifetimes.contains { $0 != nil } }

  func close() {
    for channel in channels { channel.close(promise: nil) }
  }
}
