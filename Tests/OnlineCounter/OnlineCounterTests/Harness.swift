import CounterClient
import CounterGateway
import CounterModel
import CounterProtos
import CounterStatus
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import PresenceStore
import ServiceKit
import ServiceLifecycle
import Synchronization
import TLSKit
import TestSupport
import Tracing

/// Real servers on 127.0.0.1, port 0, each run in a `ServiceGroup` that is shut down
/// gracefully when the body returns, as in production.
enum Harness {
  static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
  static let loopback = "127.0.0.1"
  /// The pong timeout of a ``withGateway(status:port:pongTimeout:maxClients:flushInterval:tls:statusSecurity:tracer:clock:_:)``
  /// gateway unless a test sets another: 30 s, not the product's 5 s, in tests where silence
  /// is not the subject. The gateway's clients here are tasks of this process, which a
  /// busy 2-core machine can stall for seconds (its cooperative pool was measured 2–3.5 s
  /// late under `stress-ng --cpu 2` as the ~200 parallel tests start); a neighbour stream
  /// ended by a stall that delayed its own pongs says nothing about what those tests check.
  /// The 5 s default is exercised where silence is the subject: ``productPongTimeout``.
  static let defaultPongTimeout = Duration.seconds(30)
  /// The gateway's own default pong timeout.
  static let productPongTimeout = Gateway.Configuration().pongTimeout
  /// The deadline of a test's own unary calls: a bound on how long a failing test waits on a
  /// loaded machine, not a latency claim.
  static let testCallTimeout = Duration.seconds(20)

  /// A `sqlite:` store URL in a fresh temporary directory (created when the store opens).
  static func temporaryStoreURL() -> String {
    let directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("online-counter-tests-\(UUID().uuidString)")
    return "sqlite:" + directory.appendingPathComponent("status.sqlite").path
  }

  /// A status server on the store `storeURL` names (SQLite or PostgreSQL), built by
  /// `StatusServer.build` as the `status` binary builds it, plaintext unless `tls` is given,
  /// and without the count cache unless `countCache` is given (its max age): tests read counts
  /// right after writing them through another server (a second status, a gateway).
  static func withStatus<T: Sendable>(
    storeURL: String, port: Int = 0, clock: @escaping MillisClock = systemMillisClock,
    tls: ServerTLSConfiguration? = nil, tracer: any Tracer = NoOpTracer(),
    countCache: Duration? = nil,
    _ body: (HostPort, StatusReader) async throws -> T
  ) async throws -> T {
    var configuration = StatusServer.Configuration(
      listen: HostPort(host: loopback, port: port), storeURL: storeURL)
    configuration.countCacheMaxAge = countCache
    configuration.tls = tls
    configuration.clock = clock
    let status = try await StatusServer.build(
      configuration: configuration, logger: logger, tracer: tracer)
    return try await withServiceGroup(status.services, logger: logger) { _ in
      try await body(try await listeningAddress(of: status.server), status.reader)
    }
  }

  /// A gateway reporting to `status`, built by `GatewayServer.build` as the `gateway` binary
  /// builds it, plaintext unless `tls` is given, and flushing every 200 ms so that tests are
  /// quick (retries back off as in production, to 1 s). `body` may also drain it earlier, through its service
  /// group. `port` 0 picks a free port.
  static func withGateway<T: Sendable>(
    status: [HostPort], port: Int = 0, pongTimeout: Duration = defaultPongTimeout,
    maxClients: Int = 1_000, presenceRefresh: Duration? = nil,
    flushInterval: Duration = .milliseconds(200),
    finalFlushBudget: Duration = .milliseconds(500), tls: ServerTLSConfiguration? = nil,
    statusSecurity: ClientSecurity = .plaintext, tracer: any Tracer = NoOpTracer(),
    clock: @escaping MillisClock = systemMillisClock,
    keepalive: ConnectionKeepalive = ConnectionKeepalive(),
    _ body: (HostPort, Gateway, PresenceReporter, ServiceGroup) async throws -> T
  ) async throws -> T {
    var configuration = GatewayServer.Configuration(
      listen: HostPort(host: loopback, port: port), gatewayID: "test", statusEndpoints: status)
    configuration.tls = tls
    configuration.gateway.pongTimeout = pongTimeout
    configuration.gateway.maxClients = maxClients
    if let presenceRefresh { configuration.gateway.presenceRefresh = presenceRefresh }
    configuration.reporter.flushInterval = flushInterval
    configuration.reporter.callTimeout = .seconds(1)
    configuration.reporter.finalFlushBudget = finalFlushBudget
    configuration.reporter.security = statusSecurity
    configuration.reporter.wallClock = clock
    configuration.keepalive = keepalive
    let gateway = try GatewayServer.build(
      configuration: configuration, logger: logger, tracer: tracer)
    return try await withServiceGroup(gateway.services, logger: logger) { group in
      try await body(
        try await listeningAddress(of: gateway.server), gateway.gateway, gateway.reporter, group)
    }
  }

  private static func listeningAddress(of server: GRPCServerService) async throws -> HostPort {
    guard let address = await server.listeningAddress else { throw HarnessError.notListening }
    return address
  }

  private static func listeningAddress(of server: GatewayListener) async throws -> HostPort {
    guard let address = await server.listeningAddress else { throw HarnessError.notListening }
    return address
  }

  /// The real `status` executable, built next to this test bundle, on the store `storeURL`;
  /// `body` starts once it answers, and may kill it (it is killed after `body` otherwise).
  static func withStatusProcess<T: Sendable>(
    storeURL: String, _ body: (HostPort, BackgroundProcess) async throws -> T
  ) async throws -> T {
    try await withServerProcess("status", ["--store", storeURL], body)
  }

  /// Runs the real `name` binary (from the test bundle's directory) on a loopback port with
  /// `arguments`, waits until its health service says SERVING, and kills it (SIGKILL) after
  /// `body`, which may kill it sooner.
  static func withServerProcess<T: Sendable>(
    _ name: String, _ arguments: [String], _ body: (HostPort, BackgroundProcess) async throws -> T
  ) async throws -> T {
    let binary = builtProduct(name)
    guard FileManager.default.isExecutableFile(atPath: binary) else {
      throw HarnessError.notBuilt(binary)
    }
    let address = HostPort(host: loopback, port: try freeLoopbackPort())
    return try await withBackgroundProcess(
      binary, ["--listen", "\(address)", "--metrics-listen", "\(loopback):0"] + arguments
    ) { process in
      // A bound on how long a broken binary keeps the test waiting, not a start-up target.
      let answering = await eventually(timeout: .seconds(20)) {
        (try? await HealthProbe.check(address).get()) == .serving
      }
      guard answering else { throw HarnessError.notAnswering(log: process.logPath) }
      return try await body(address, process)
    }
  }

  /// Runs `client` while `body` runs.
  static func withClient<T: Sendable>(
    _ client: CounterClient, _ body: () async throws -> T
  ) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await client.run() }
      defer { tasks.cancelAll() }
      return try await body()
    }
  }

  struct StreamResult: Sendable {
    var start: ContinuousClock.Instant
    /// When the gateway's response began (the stream was accepted), after connecting.
    var accepted: ContinuousClock.Instant?
    var pingTimes: [ContinuousClock.Instant]
    var error: RPCError?
    var elapsed: Duration
  }

  /// A hand-made `Connect` stream: answers pings with `answer` (never, when `nil`) until it
  /// has received `pings`, then ends its side and drains. `timeout` is the test's own bound
  /// on a broken gateway, not a latency claim: 15 s was missed once with load average 15
  /// (stress-ng and parallel builds), where a handful of pings took that long.
  static func rawStream(
    gateway: HostPort, metadata: Metadata, answer: Tenten_Interview_Status?, pings: Int,
    timeout: Duration = .seconds(30)
  ) async throws -> StreamResult {
    let times = Mutex<[ContinuousClock.Instant]>([])
    let accepted = Mutex<ContinuousClock.Instant?>(nil)
    let start = ContinuousClock.now
    return try await withConnection(to: gateway) { client in
      let stub = Tenten_Interview_Gateway.Client(wrapping: client)
      let (answers, answering) = AsyncStream.makeStream(of: Void.self)
      do {
        try await stub.connect(
          metadata: metadata, options: .withTimeout(timeout),
          requestProducer: { writer in
            for await _ in answers {
              if let answer { try await writer.write(.with { $0.status = answer }) }
            }
          },
          onResponse: { response in
            accepted.withLock { $0 = .now }
            defer { answering.finish() }
            for try await _ in response.messages {
              // Pings that arrive after the last one asked for (while the stream drains)
              // are not counted: the result has exactly `pings` on success.
              let count = times.withLock { times in
                if times.count < pings { times.append(.now) }
                return times.count
              }
              if count >= pings { answering.finish() } else { answering.yield() }
            }
          })
        return StreamResult(
          start: start, accepted: accepted.withLock { $0 }, pingTimes: times.withLock { $0 },
          error: nil, elapsed: .now - start)
      } catch let error as RPCError {
        return StreamResult(
          start: start, accepted: accepted.withLock { $0 }, pingTimes: times.withLock { $0 },
          error: error, elapsed: .now - start)
      }
    }
  }

  static func clientID(_ id: String) -> Metadata { ["client-id": .string(id)] }

  /// Reports presence straight to a status server, as a gateway would.
  static func report(
    _ records: [(String, Int64)], to status: HostPort, security: ClientSecurity = .plaintext
  ) async throws -> Tenten_Interview_ReportPresenceResponse {
    try await withConnection(to: status, security: security) { client in
      try await Tenten_Interview_PresenceIngest.Client(wrapping: client).reportPresence(
        .with {
          $0.gatewayID = "test"
          $0.records = records.map { id, millis in
            .with {
              $0.userID = id
              $0.lastSeenUnixMs = millis
            }
          }
        }, options: .withTimeout(testCallTimeout))
    }
  }

  /// The count, asked over gRPC.
  static func fetchCount(
    from status: HostPort, security: ClientSecurity = .plaintext
  ) async throws -> UInt64 {
    try await withConnection(to: status, security: security) { client in
      try await Tenten_Interview_StatusReader.Client(wrapping: client)
        .fetchOnlineUsersInLast3Mins(.init(), options: .withTimeout(testCallTimeout)).onlineUsers
    }
  }

  /// A client connection to the server at `address` for the duration of `body`.
  static func withConnection<T: Sendable>(
    to address: HostPort, security: ClientSecurity = .plaintext,
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
  ) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(
      target: address.resolvableTarget, transportSecurity: security.transportSecurity)
    return try await withGRPCClient(transport: transport, handleClient: body)
  }
}

extension CallOptions {
  /// The defaults with a deadline.
  static func withTimeout(_ timeout: Duration) -> Self {
    var options = Self.defaults
    options.timeout = timeout
    return options
  }
}

enum HarnessError: Error {
  case notListening
  case notAnswering(log: String)
  /// `swift build` (and so `swift test`) builds every product.
  case notBuilt(String)
}
