public import ConnectionKit
public import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
public import ServiceKit
public import ServiceLifecycle
import Synchronization
public import TLSKit

/// Serves `Connect` on its own HTTP/2 pipeline, with no task per stream: swift-nio-http2's
/// multiplexer gives each stream a channel, and a ``ConnectStreamHandler`` there serves the
/// call on the connection's event loop (pings written by the gateway's timer, pongs handled as
/// they are read).
///
/// Each connection: the ``ConnectionGuard`` (caps at accept, handshake deadline), TLS when
/// configured, ``DeferredFlushHandler`` (the pings of one timer tick leave in one write per
/// connection), ping pacing (grpc-go's BDP pings served, not refused), `NIOHTTP2Handler`
/// (max concurrent streams, flow control) and `NIOHTTP2ServerConnectionManagementHandler`
/// (keepalive pings 30 s / 10 s, idle connections closed, GOAWAY on drain).
public final class ConnectListener: Service, Sendable {
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
  }

  private let configuration: Configuration
  private let gateway: Gateway
  private let connectionGuard: ConnectionGuard
  private let sslContext: NIOSSLContext?
  private let logger: Logger
  private let state = Mutex(State())

  /// - Throws: When a TLS certificate, key or CA file cannot be loaded.
  public init(
    configuration: Configuration, gateway: Gateway, name: String = "gateway", logger: Logger
  ) throws {
    self.configuration = configuration
    self.gateway = gateway
    self.connectionGuard = ConnectionGuard(
      name: name, limits: configuration.connectionLimits, logger: logger)
    self.sslContext = try configuration.tls.map {
      try NIOSSLContext(configuration: try $0.makeTLSConfiguration())
    }
    self.logger = logger
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
    let server: any Channel
    do {
      server = try await bind()
    } catch {
      resolveBound(.failure(error))
      throw error
    }
    resolveBound(.success(server.localAddress))
    state.withLock { $0.server = server }
    logger.info(
      "Connect listener up",
      metadata: [
        "server.address": "\(server.localAddress.map { "\($0)" } ?? "?")",
        "server.security": "\(configuration.tls == nil ? "plaintext" : "TLS 1.3")",
      ])
    // Serve until graceful shutdown (the gateway, after it, has already ended every stream
    // by then: it drains first), then stop accepting and tell each connection to go away.
    try? await gracefulShutdown()
    try? await server.close()
    let connections = state.withLock { Array($0.connections.values) }
    for connection in connections {
      connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
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
    return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: Int32(clamping: configuration.connectionLimits.acceptBacklog))
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try connectionGuard.addAdmissionHandler(to: channel)
        }
      }
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try self.configure(channel) }
      }
      .bind(host: configuration.address.host, port: configuration.address.port).get()
  }

  /// The connection pipeline; see the type's documentation. On the channel's event loop.
  private func configure(_ channel: any Channel) throws {
    let id = ObjectIdentifier(channel)
    state.withLock { $0.connections[id] = channel }
    channel.closeFuture.whenComplete { [self] _ in
      _ = state.withLock { $0.connections.removeValue(forKey: id) }
    }
    let sync = channel.pipeline.syncOperations
    if let sslContext { try sync.addHandler(NIOSSLServerHandler(context: sslContext)) }
    try connectionGuard.addHandshakeDeadline(to: channel)
    try sync.addHandler(DeferredFlushHandler())
    let management = NIOHTTP2ServerConnectionManagementHandler(
      eventLoop: channel.eventLoop,
      configuration: .init(
        maxIdleTime: TimeAmount(configuration.maxIdleTime), maxAge: nil,
        maxGraceTime: TimeAmount(configuration.maxGraceTime),
        keepalive: .init(pingInterval: .seconds(30), ackTimeout: .seconds(10))))
    var connection = NIOHTTP2Handler.ConnectionConfiguration()
    connection.initialSettings = [
      HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.maxConcurrentStreams),
      HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
    ]
    let gateway = self.gateway
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
          ConnectStreamHandler(gateway: gateway, limits: limits))
      }
    }
    try sync.addHandler(management)
    try sync.addPingPacing()
  }
}

/// Holds a connection's flushes until the end of the event-loop task that asked for them, so
/// that the pings the gateway's timer writes to many streams of one connection in one task
/// leave in one write (one system call) rather than one each.
final class DeferredFlushHandler: ChannelOutboundHandler {
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private var pending = false

  func flush(context: ChannelHandlerContext) {
    guard !pending else { return }
    pending = true
    context.eventLoop.assumeIsolated().execute {
      self.pending = false
      context.flush()
    }
  }
}
