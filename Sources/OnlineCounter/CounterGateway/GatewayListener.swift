public import ConnectionKit
public import GRPCCore
import GRPCInProcessTransport
public import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
public import ServiceKit
public import ServiceLifecycle
import Synchronization
public import TLSKit

/// The gateway's gRPC port. `Connect` is served on the gateway's own HTTP/2 pipeline, with no
/// task per stream: swift-nio-http2's multiplexer gives each stream a channel, and a
/// ``ConnectStreamHandler`` there serves the call on the connection's event loop (pings
/// written by the gateway's timer, pongs handled as they are read). Every other method
/// (health, reflection) is served by grpc-swift services on an in-process transport, each call
/// passed through by an ``InProcessCallHandler``.
///
/// Each connection: the ``ConnectionGuard`` (caps at accept, handshake deadline), TLS when
/// configured, ``DeferredFlushHandler`` (the pings of one timer tick leave in one write per
/// connection), ping pacing (grpc-go's BDP pings served, not refused), `NIOHTTP2Handler`
/// (max concurrent streams, flow control), `NIOHTTP2ServerConnectionManagementHandler` (idle
/// connections closed after 5 minutes, GOAWAY on drain) and ``KeepaliveHandler`` (by default
/// a PING after 30 s without a connection-level frame, the connection closed without an
/// answer within 10 s).
///
/// As a `Service`: listens until graceful shutdown, then stops accepting, ends health watches,
/// sends every connection GOAWAY and waits (≤ ``Configuration/maxGraceTime``) for them to close.
/// List it before the ``Gateway``, which drains the streams first.
public final class GatewayListener: Service, Sendable {
  public struct Configuration: Sendable {
    public var address: HostPort
    public var tls: ServerTLSConfiguration?
    public var maxConcurrentStreams: Int
    public var maxRequestBytes: Int
    public var maxUnsentPings: Int
    public var connectionLimits: ConnectionLimits
    /// A connection with no open stream for this long is closed.
    public var maxIdleTime: Duration = .seconds(5 * 60)
    /// How long a draining connection may keep streams open before it is closed.
    public var maxGraceTime: Duration = .seconds(10)
    /// When a quiet connection is pinged, and how long it has to answer.
    public var keepalive = ConnectionKeepalive()

    public init(
      address: HostPort, tls: ServerTLSConfiguration? = nil, maxConcurrentStreams: Int,
      maxRequestBytes: Int, maxUnsentPings: Int, connectionLimits: ConnectionLimits
    ) {
      self.address = address
      self.tls = tls
      self.maxConcurrentStreams = maxConcurrentStreams
      self.maxRequestBytes = maxRequestBytes
      self.maxUnsentPings = maxUnsentPings
      self.connectionLimits = connectionLimits
    }
  }

  private struct State {
    var server: (any Channel)?
    var bound: Result<SocketAddress?, any Error>?
    var waiting: [CheckedContinuation<SocketAddress?, Never>] = []
    var connections: [ObjectIdentifier: any Channel] = [:]
    /// Connections accepted so far (each one's number picks its ping slot).
    var accepted = 0
  }

  private let configuration: Configuration
  /// The event loops that carry the clients' connections, and that the listener watches for
  /// stalls on the gateway's behalf (``Gateway/eventLoopStalled(late:)``).
  private let eventLoops: any EventLoopGroup = ProcessEventLoops.group
  private let gateway: Gateway
  private let inProcess = InProcessTransport()
  private let otherServices: GRPCServer<InProcessTransport.Server>
  private let health: [HealthService]
  private let name: String
  private let connectionGuard: ConnectionGuard
  private let sslContext: NIOSSLContext?
  private let logger: Logger
  private let state = Mutex(State())
  private let keepaliveSweeps: PerEventLoop<KeepaliveSweep>

  /// - Throws: When a TLS certificate, key or CA file cannot be loaded.
  ///
  /// - Parameter otherServices: Served for every method but `Connect` (health, reflection); a
  ///   served ``HealthService`` has its watches ended when the listener drains.
  public init(
    configuration: Configuration, gateway: Gateway, otherServices: [any RegistrableRPCService],
    name: String = "gateway", logger: Logger
  ) throws {
    self.configuration = configuration
    self.gateway = gateway
    self.otherServices = GRPCServer(transport: inProcess.server, services: otherServices)
    self.health = otherServices.compactMap { $0 as? HealthService }
    self.name = name
    self.connectionGuard = ConnectionGuard(
      name: name, limits: configuration.connectionLimits, logger: logger)
    self.sslContext = try configuration.tls.map {
      try NIOSSLContext(configuration: try $0.makeTLSConfiguration())
    }
    self.logger = logger
    let keepalive = configuration.keepalive
    self.keepaliveSweeps = PerEventLoop { KeepaliveSweep(eventLoop: $0, keepalive: keepalive) }
  }

  /// The bound address, once listening (`nil` if binding failed).
  public var listeningAddress: HostPort? {
    get async {
      let address = await withCheckedContinuation { continuation in
        let known = state.withLock { state -> Result<SocketAddress?, any Error>? in
          if state.bound == nil { state.waiting.append(continuation) }
          return state.bound
        }
        if let known { continuation.resume(returning: (try? known.get()) ?? nil) }
      }
      guard let address, let host = address.ipAddress, let port = address.port else { return nil }
      return HostPort(host: host, port: port)
    }
  }

  public func run() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { try await self.otherServices.serve() }
      group.addTask { try await self.inProcess.client.connect() }
      group.addTask {
        await EventLoopStallWatch.run(
          on: self.eventLoops, threshold: TimeAmount(PingScheduler.stallThreshold)
        ) { late in
          self.gateway.eventLoopStalled(late: Duration(late))
        }
      }
      try await serve()
      group.cancelAll()
    }
  }

  private func serve() async throws {
    let server: any Channel
    do {
      server = try await bind()
    } catch {
      resolveBound(.failure(error))
      let failure = ServerError(name: name, address: configuration.address, cause: error)
      logger.error(
        "gRPC server failed",
        metadata: [
          "server.name": "\(name)", "server.address": "\(configuration.address)",
          "error": "\(failure.reason)",
        ])
      throw failure
    }
    resolveBound(.success(server.localAddress))
    state.withLock { $0.server = server }
    let bound = await listeningAddress.map { "\($0)" } ?? "?"
    logger.info(
      "gRPC server listening",
      metadata: [
        "server.name": "\(name)", "server.address": "\(bound)",
        "server.security": "\(configuration.tls == nil ? "plaintext" : "TLS 1.3")",
      ])
    // Serve until graceful shutdown (the gateway has ended every `Connect` stream by then: it
    // drains first), then stop accepting, end the other calls and tell each connection to go.
    try? await gracefulShutdown()
    logger.info("gRPC server draining", metadata: ["server.name": "\(name)"])
    try? await server.close()
    for service in health { service.endWatches() }
    otherServices.beginGracefulShutdown()
    inProcess.client.beginGracefulShutdown()
    let connections = state.withLock { Array($0.connections.values) }
    let grace = TimeAmount(configuration.maxGraceTime)
    for connection in connections {
      connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
      // A peer that never acknowledges the GOAWAY's ping does not hold the shutdown.
      connection.eventLoop.scheduleTask(in: grace) { connection.close(promise: nil) }
    }
    for connection in connections { try? await connection.closeFuture.get() }
  }

  private func resolveBound(_ result: Result<SocketAddress?, any Error>) {
    let waiting = state.withLock { state in
      state.bound = result
      defer { state.waiting = [] }
      return state.waiting
    }
    for continuation in waiting { continuation.resume(returning: (try? result.get()) ?? nil) }
  }

  private func bind() async throws -> any Channel {
    let connectionGuard = self.connectionGuard
    return try await ServerBootstrap(group: eventLoops)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(
        .backlog, value: Int32(clamping: configuration.connectionLimits.acceptBacklog)
      )
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try connectionGuard.addAdmissionHandler(to: channel)
        }
      }
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      // Each connection keeps its receive buffer between reads: 512 bytes to start (a pong
      // and its frame are ~20 bytes) rather than NIO's 2 KiB, growing when reads fill it.
      .childChannelOption(
        .recvAllocator,
        value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)
      )
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try self.configure(channel) }
      }
      .bind(host: configuration.address.host, port: configuration.address.port).get()
  }

  /// The connection pipeline; see the type's documentation. On the channel's event loop.
  private func configure(_ channel: any Channel) throws {
    let id = ObjectIdentifier(channel)
    let accepted = state.withLock { state in
      state.connections[id] = channel
      state.accepted += 1
      return state.accepted
    }
    // Hashed, not round robin: NIO hands connections to its event loops round robin too, so
    // `accepted % slots` put every connection of a slot on one loop, and with one stream per
    // connection the ping interval's p99 went from 1013 to 1781 ms (10,000 connections).
    let slot = PingScheduler.slot(of: "connection-\(accepted)")
    channel.closeFuture.whenComplete { [self] _ in
      _ = state.withLock { $0.connections.removeValue(forKey: id) }
    }
    let sync = channel.pipeline.syncOperations
    if let sslContext { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
    try connectionGuard.addHandshakeDeadline(to: channel)
    try sync.addHandler(
      DeferredFlushHandler(batch: gateway.scheduler.flushBatch(on: channel.eventLoop)))
    let management = NIOHTTP2ServerConnectionManagementHandler(
      eventLoop: channel.eventLoop,
      configuration: .init(
        maxIdleTime: TimeAmount(configuration.maxIdleTime), maxAge: nil,
        maxGraceTime: TimeAmount(configuration.maxGraceTime),
        keepalive: nil))
    var connection = NIOHTTP2Handler.ConnectionConfiguration()
    connection.initialSettings = [
      HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.maxConcurrentStreams),
      HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
    ]
    let gateway = self.gateway
    let otherMethods = inProcess.client
    let limits = ConnectStreamHandler.Limits(
      maxMessageBytes: configuration.maxRequestBytes,
      maxUnsentPings: configuration.maxUnsentPings)
    _ = try sync.configureHTTP2Pipeline(
      mode: .server, connectionConfiguration: connection,
      streamConfiguration: NIOHTTP2Handler.StreamConfiguration(),
      streamDelegate: management.http2StreamDelegate
    ) { stream in
      stream.eventLoop.makeCompletedFuture {
        try stream.pipeline.syncOperations.addHandler(
          ConnectStreamHandler(
            gateway: gateway, limits: limits, slot: slot, otherMethods: otherMethods))
      }
    }
    try sync.addHandler(management)
    try sync.addHandler(
      KeepaliveHandler(sweep: keepaliveSweeps.value(on: channel.eventLoop)))
    try sync.addPingPacing()
  }
}

/// The connection flushes an event loop holds back while it writes one batch of pings
/// (``PingScheduler``'s visit of the loop's due sessions): each connection with pings in the
/// batch is flushed once at its end, so the pings of many streams of one connection leave in
/// one write (one system call). On its event loop only.
final class FlushBatch {
  private var open = false
  private var held: [(DeferredFlushHandler, ChannelHandlerContext)] = []

  /// Runs `writes`, then flushes every connection that asked for a flush meanwhile.
  func run(_ writes: () -> Void) {
    open = true
    writes()
    open = false
    let held = self.held
    self.held.removeAll(keepingCapacity: true)
    for (handler, context) in held { handler.release(context: context) }
  }

  /// Holds a flush of `context` until the batch's end; `false` when no batch is being written.
  fileprivate func hold(_ handler: DeferredFlushHandler, context: ChannelHandlerContext) -> Bool {
    guard open else { return false }
    held.append((handler, context))
    return true
  }
}

/// Holds a connection's flushes during its event loop's batch of pings (``FlushBatch``), so
/// that the pings of all its streams leave in one write; any other flush passes at once.
final class DeferredFlushHandler: ChannelOutboundHandler {
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let batch: FlushBatch
  private var held = false

  init(batch: FlushBatch) {
    self.batch = batch
  }

  func flush(context: ChannelHandlerContext) {
    guard !held else { return }
    if batch.hold(self, context: context) {
      held = true
    } else {
      context.flush()
    }
  }

  fileprivate func release(context: ChannelHandlerContext) {
    held = false
    context.flush()
  }
}
