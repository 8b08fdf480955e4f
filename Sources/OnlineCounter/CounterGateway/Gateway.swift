import CounterModel
public import CounterProtos
public import GRPCCore
public import Logging
import Metrics
public import NIOCore
public import ServiceKit
public import ServiceLifecycle
public import Tracing

/// `tenten.interview.Gateway`: holds the clients' presence streams.
///
/// Each `Connect` stream is registered with the shared ``PingScheduler``; its handler only
/// forwards scheduled pings to the stream and EVEN/ODD pongs to the ``PresenceReporter``.
/// The gateway's port (``GatewayListener``) serves each stream with a
/// ``ConnectStreamHandler`` on the stream's event loop, no task per stream
/// (``openStream(metadata:slot:sink:)``, ``pongReceived(_:on:)``, ``streamEnded(_:)``). As
/// a generated `ServiceProtocol` it can also be registered on any grpc-swift server
/// (``connect(request:context:)``: two tasks per stream, ~20 KiB more per client).
///
/// As a `Service`, it runs the ping timer and, on graceful shutdown, drains: marks health
/// `NOT_SERVING`, refuses new streams, and ends every stream with `UNAVAILABLE` so that
/// clients reconnect to another gateway. List it *after* the gRPC server in the service
/// group, so that it drains before the server waits for in-flight streams to end.
public final class Gateway: Tenten_Interview_Gateway.ServiceProtocol, Service, Sendable {
  public static let serviceName = "tenten.interview.Gateway"

  public struct Configuration: Sendable {
    public var pongTimeout: Duration = .seconds(5)
    public var maxClients = 100_000
    /// How long draining waits for streams to end before returning anyway.
    public var drainTimeout: Duration = .seconds(5)

    public init() {}
  }

  private let config: Configuration
  private let scheduler: PingScheduler
  private let reporter: PresenceReporter
  private let health: HealthService?
  private let logger: Logger
  private let tracer: any Tracer
  private let eventLoops: (any EventLoopGroup)?
  private let pongsEven = Counter(label: "gateway_pongs_total", dimensions: [("status", "even")])
  private let pongsOdd = Counter(label: "gateway_pongs_total", dimensions: [("status", "odd")])
  private let pongsUnknown = Counter(
    label: "gateway_pongs_total", dimensions: [("status", "unknown")])
  private let refused = Counter(label: "gateway_streams_refused_total")

  /// - Parameters:
  ///   - tracer: each stream is a `gateway.stream` span from admission to end (a child of
  ///     the client's trace context, if it sent one).
  ///   - eventLoops: the event loops that carry the clients' connections, watched for
  ///     stalls (``PingScheduler``); `nil` watches none.
  public init(
    configuration: Configuration, reporter: PresenceReporter, health: HealthService?,
    logger: Logger, tracer: any Tracer = InstrumentationSystem.tracer,
    eventLoops: (any EventLoopGroup)?
  ) {
    self.config = configuration
    self.scheduler = PingScheduler(
      maxSessions: configuration.maxClients, pongTimeout: configuration.pongTimeout,
      logger: logger)
    self.reporter = reporter
    self.health = health
    self.logger = logger
    self.tracer = tracer
    self.eventLoops = eventLoops
  }

  /// Streams currently open.
  public var connectedClients: Int { scheduler.count }

  public func run() async throws {
    await withDiscardingTaskGroup { group in
      group.addTask { await self.scheduler.run() }
      if let eventLoops {
        group.addTask {
          await EventLoopStallWatch.run(
            on: eventLoops, threshold: TimeAmount(PingScheduler.stallThreshold)
          ) { late in
            self.scheduler.noteStall(of: Duration(late), in: "an event loop", endingAt: .now)
          }
        }
      }
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

  public func connect(
    request: StreamingServerRequest<Tenten_Interview_Pong>, context: ServerContext
  ) async throws -> StreamingServerResponse<Tenten_Interview_Ping> {
    let userID = try UserIDMetadata.userID(from: request.metadata)
    // Refuse early, before the response starts, when we already know the answer...
    if let refusal = scheduler.admissionError() {
      refused.increment()
      throw refusal
    }
    let caller = TraceContextMetadata.extract(from: request.metadata, tracer: tracer)
    // ...but register only in `serve`, which the response's producer runs: the producer is
    // what removes the session again, and it does not run for an RPC cancelled before it
    // starts.
    return StreamingServerResponse { writer in
      try await self.serve(userID, request: request, writer: writer, caller: caller)
    }
  }

  /// One admitted stream, from registration to its end.
  private func serve(
    _ userID: String, request: StreamingServerRequest<Tenten_Interview_Pong>,
    writer: RPCWriter<Tenten_Interview_Ping>, caller: ServiceContext
  ) async throws -> Metadata {
    let span = self.tracer.startSpan("gateway.stream", context: caller, ofKind: .server)
    span.attributes["client.id"] = userID
    defer { span.end() }
    let session: ClientSession
    do {
      session = try self.admit(userID)
    } catch {
      span.recordError(error)
      throw error
    }
    // Metadata at the call, not a Logger copy per stream: a copy costs ~450 bytes a client.
    self.logger.debug("client connected", metadata: ["gateway.client_id": "\(userID)"])
    defer {
      self.scheduler.remove(session)
      self.logger.debug("client disconnected", metadata: ["gateway.client_id": "\(userID)"])
      if let reason = session.closeReason {
        span.recordError(reason)
        span.setStatus(SpanStatus(code: .error, message: reason.message))
      }
    }
    session.pingNow()
    // Two tasks per stream (each costs ~1.3 KB of task memory a client): one reads pongs,
    // one writes pings. This one waits for the end, whoever decides it: the gateway (pong
    // timeout, flood, a write that never returns, drain) or either task (the client left,
    // the transport failed); then it stops both, even one blocked in a read or a write.
    await withTaskGroup { group in
      group.addTask {
        do {
          for try await pong in request.messages {
            guard session.heard(at: .now) else { throw session.closeReason ?? Self.flooded }
            self.count(pong.status, userID: userID)
          }
          session.taskEnded(nil)  // the client ended its side: it is leaving
        } catch {
          session.taskEnded(error)
        }
      }
      group.addTask {
        do {
          for await _ in session.pings {
            session.writeStarted(at: .now)
            try await writer.write(Tenten_Interview_Ping())
            session.writeFinished()
          }
        } catch {
          session.taskEnded(error)
        }
      }
      for await _ in session.closed {}
      group.cancelAll()
    }
    if let error = session.endError { throw error }
    return [:]
  }

  // MARK: Streams served on an event loop (`ConnectStreamHandler`)

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

  /// One pong on `stream`; `false` when the client floods (its session is then closed).
  func pongReceived(_ status: Tenten_Interview_Status, on stream: ConnectStream) -> Bool {
    guard stream.session.heard(at: .now) else { return false }
    count(status, userID: stream.session.userID)
    return true
  }

  /// Counts one pong; an EVEN/ODD one marks the user online.
  private func count(_ status: Tenten_Interview_Status, userID: String) {
    switch status {
    case .even: pongsEven.increment()
    case .odd: pongsOdd.increment()
    case .unknown, .UNRECOGNIZED:
      // Alive, but not online.
      pongsUnknown.increment()
      return
    }
    reporter.record(userID, at: .now)
  }

  /// The stream ended, for whatever reason: unregisters it and ends its span.
  func streamEnded(_ stream: ConnectStream) {
    scheduler.remove(stream.session)
    logger.debug(
      "client disconnected", metadata: ["gateway.client_id": "\(stream.session.userID)"])
    if let reason = stream.session.closeReason {
      stream.span.recordError(reason)
      stream.span.setStatus(SpanStatus(code: .error, message: reason.message))
    }
    stream.span.end()
  }

  /// Only if the session lost its reason, which ``ClientSession/heard(at:)`` always sets.
  private static let flooded = RPCError(code: .resourceExhausted, message: "too many pongs")

  private func admit(_ userID: String) throws(RPCError) -> ClientSession {
    switch scheduler.add(userID: userID) {
    case .success(let session):
      return session
    case .failure(let error):
      refused.increment()
      throw error.rpcError
    }
  }
}

/// A `Connect` stream admitted by ``Gateway/openStream(metadata:sink:)``.
struct ConnectStream: Sendable {
  let session: ClientSession
  let span: any Span
}
