import CounterModel
import CounterProtos
import GRPCCore
public import Logging
import Metrics
public import ServiceKit
public import ServiceLifecycle
public import Tracing

/// `tenten.interview.Gateway`: holds the clients' presence streams.
///
/// Each `Connect` stream is registered with the shared ``PingScheduler``; the gateway only
/// forwards scheduled pings to the stream and EVEN/ODD pongs to the ``PresenceReporter``.
/// The gateway's port (``GatewayListener``) serves each stream with a
/// ``ConnectStreamHandler`` on the stream's event loop, no task per stream
/// (``openStream(metadata:slot:sink:)``, ``pongReceived(_:on:)``, ``streamEnded(_:)``), and
/// reports its event loops' stalls (``eventLoopStalled(late:)``).
///
/// As a `Service`, it runs the ping timer and, on graceful shutdown, drains: marks health
/// `NOT_SERVING`, refuses new streams, and ends every stream with `UNAVAILABLE` so that
/// clients reconnect to another gateway. List it *after* the gRPC server in the service
/// group, so that it drains before the server waits for in-flight streams to end.
public final class Gateway: Service, Sendable {
  public static let serviceName = "tenten.interview.Gateway"

  public struct Configuration: Sendable {
    public var pongTimeout: Duration = .seconds(5)
    public var maxClients = 100_000
    /// How long draining waits for streams to end before returning anyway.
    public var drainTimeout: Duration = .seconds(5)
    /// How often a connected user is reported online again (``PresenceRefresh``): its first
    /// EVEN/ODD pong is reported at once, then one every `presenceRefresh`, and its last one
    /// when its stream ends. Status's writes are N / `presenceRefresh` a second for N online
    /// users; a gateway that dies loses up to this much of its users' presence. Zero reports
    /// every online pong. Must stay well below the 180 s window.
    public var presenceRefresh: Duration = .seconds(10)

    public init() {}
  }

  private let config: Configuration
  /// Internal for tests, which drive its visits on instants of their own.
  let scheduler: PingScheduler
  private let reporter: PresenceReporter
  private let health: HealthService?
  private let logger: Logger
  private let tracer: any Tracer
  private let pongsEven = Counter(label: "gateway_pongs_total", dimensions: [("status", "even")])
  private let pongsOdd = Counter(label: "gateway_pongs_total", dimensions: [("status", "odd")])
  private let pongsUnknown = Counter(
    label: "gateway_pongs_total", dimensions: [("status", "unknown")])
  private let refused = Counter(label: "gateway_streams_refused_total")

  /// - Parameters:
  ///   - tracer: each stream is a `gateway.stream` span from admission to end (a child of
  ///     the client's trace context, if it sent one).
  public init(
    configuration: Configuration, reporter: PresenceReporter, health: HealthService?,
    logger: Logger, tracer: any Tracer = InstrumentationSystem.tracer
  ) {
    self.config = configuration
    self.scheduler = PingScheduler(
      maxSessions: configuration.maxClients, pongTimeout: configuration.pongTimeout,
      logger: logger)
    self.reporter = reporter
    self.health = health
    self.logger = logger
    self.tracer = tracer
  }

  /// Streams currently open.
  public var connectedClients: Int { scheduler.count }

  public func run() async throws {
    await withDiscardingTaskGroup { group in
      group.addTask { await self.scheduler.run() }
      try? await gracefulShutdown()
      await self.drain()
      group.cancelAll()
    }
  }

  private func drain() async {
    logger.info("gateway draining", metadata: ["gateway.clients": "\(scheduler.count)"])
    health?.markAllNotServing()
    scheduler.drain(RPCError(code: .unavailable, message: "gateway draining"))
    let clock = ContinuousClock()
    let deadline = clock.now + config.drainTimeout
    while scheduler.count > 0, clock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
  }

  // MARK: Streams served on an event loop (`ConnectStreamHandler`)

  /// One of the event loops that carry the clients' connections ran `late`: its clients'
  /// pongs went unread meanwhile, which their pong deadlines must not count as silence.
  func eventLoopStalled(late: Duration) {
    scheduler.noteStall(of: late, in: "an event loop", endingAt: .now)
  }

  /// Admits a `Connect` stream whose request carried `metadata`: validates the user id, then
  /// registers a session pinged on `slot` whose pings go to `sink`; the error to answer
  /// otherwise.
  func openStream(
    metadata: Metadata, slot: Int, sink: PingSink
  ) -> Result<ConnectStream, RPCError> {
    let userID: String
    do {
      userID = try UserIDMetadata.userID(from: metadata)
    } catch {
      return .failure(error)
    }
    let caller = TraceContextMetadata.extract(from: metadata, tracer: tracer)
    switch scheduler.add(userID: userID, slot: slot, sink: sink) {
    case .failure(let error):
      refused.increment()
      return .failure(error.rpcError)
    case .success(let session):
      let span = tracer.startSpan("gateway.stream", context: caller, ofKind: .server)
      span.attributes["client.id"] = userID
      logger.debug("client connected", metadata: ["gateway.client_id": "\(userID)"])
      return .success(ConnectStream(session: session, span: span))
    }
  }

  /// One pong on `session`'s stream; `false` when the client floods (the session is then
  /// closed).
  func pongReceived(_ status: Tenten_Interview_Status, on session: ClientSession) -> Bool {
    let (counter, online): (Counter, Bool)
    switch status {
    case .even: (counter, online) = (pongsEven, true)
    case .odd: (counter, online) = (pongsOdd, true)
    case .unknown, .UNRECOGNIZED: (counter, online) = (pongsUnknown, false)  // alive, not online
    }
    let heard = session.heard(at: .now, online: online, refresh: config.presenceRefresh)
    guard heard.withinBudget else { return false }
    counter.increment()
    if let instant = heard.report { reporter.record(session.userID, at: instant) }
    return true
  }

  /// The stream ended, for whatever reason: unregisters it and ends its span.
  func streamEnded(_ stream: ConnectStream) {
    // Recorded before the stream leaves the count of connected clients.
    if let last = stream.session.unreportedPresence() {
      reporter.record(stream.session.userID, at: last)
    }
    scheduler.remove(stream.session)
    logger.debug(
      "client disconnected", metadata: ["gateway.client_id": "\(stream.session.userID)"])
    if let reason = stream.session.closeReason {
      stream.span.recordError(reason)
      stream.span.setStatus(SpanStatus(code: .error, message: reason.message))
    }
    stream.span.end()
  }
}

/// A `Connect` stream admitted by ``Gateway/openStream(metadata:slot:sink:)``.
struct ConnectStream: Sendable {
  let session: ClientSession
  let span: any Span
}
