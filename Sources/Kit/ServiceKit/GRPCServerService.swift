import ConnectionKit
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import TLSKit

/// Runs a `GRPCServer` as a `Service`: serves until graceful shutdown begins, then stops
/// accepting new RPCs and lets in-flight ones finish (the service group's deadline bounds how
/// long that may take).
public final class GRPCServerService: Service, Sendable {
  private let name: String
  private let security: String
  private let logger: Logger
  private let onDrain: @Sendable () -> Void
  // The server is generic over its transport (our guarded plaintext listener, or our TLS 1.3
  // listener); these closures erase that type.
  private let serve: @Sendable () async throws -> Void
  private let stop: @Sendable () -> Void
  private let boundAddress: @Sendable () async -> SocketAddress?

  /// A plaintext server (the loopback default).
  ///
  /// - Parameters:
  ///   - name: How logs name this server (`gateway`, `status`, …).
  ///   - address: Where to listen; port 0 picks a free port, logged once bound.
  ///   - services: The services to serve. Health and reflection are added by the caller (see
  ///     ``StandardServices``) so that tests can serve exactly what they need.
  ///   - config: Transport configuration; see ``GRPCServerService/hardenedConfig(maxRequestBytes:maxConcurrentStreams:maxIdleTime:)``.
  ///   - connectionLimits: Caps on connections and the handshake deadline, enforced by the
  ///     listener (see `ConnectionGuard`).
  ///   - onDrain: Called when graceful shutdown begins, before the server stops accepting:
  ///     end long-lived streams here (e.g. ``HealthService/endWatches()``), because gRPC waits
  ///     for every open RPC to finish.
  public convenience init(
    name: String,
    address: HostPort,
    services: [any RegistrableRPCService],
    config: HTTP2ServerTransport.Posix.Config = GRPCServerService.hardenedConfig(),
    connectionLimits: ConnectionLimits = .init(),
    interceptors: [any ServerInterceptor] = [],
    logger: Logger,
    onDrain: @escaping @Sendable () -> Void = {}
  ) {
    let factory = PlaintextListenerFactory(
      host: address.host, port: address.port,
      connectionGuard: ConnectionGuard(name: name, limits: connectionLimits, logger: logger))
    let transport = PlaintextServerTransport(listenerFactory: factory, config: .init(config))
    self.init(
      name: name, security: "plaintext", transport: transport, services: services,
      interceptors: interceptors, logger: logger, onDrain: onDrain,
      boundAddress: { await transport.listeningAddress })
  }

  /// A server that is plaintext when `tls` is `nil`, else TLS 1.3 only (mutual when the
  /// configuration names a client CA); the other parameters are as for the plaintext one.
  /// Throws when a certificate, key or CA file cannot be loaded.
  public convenience init(
    name: String,
    address: HostPort,
    services: [any RegistrableRPCService],
    tls: ServerTLSConfiguration?,
    config: HTTP2ServerTransport.Posix.Config = GRPCServerService.hardenedConfig(),
    connectionLimits: ConnectionLimits = .init(),
    interceptors: [any ServerInterceptor] = [],
    logger: Logger,
    onDrain: @escaping @Sendable () -> Void = {}
  ) throws {
    guard let tls else {
      self.init(
        name: name, address: address, services: services, config: config,
        connectionLimits: connectionLimits, interceptors: interceptors, logger: logger,
        onDrain: onDrain)
      return
    }
    let factory = try TLSListenerFactory(
      host: address.host, port: address.port, configuration: tls, registry: nil,
      connectionGuard: ConnectionGuard(name: name, limits: connectionLimits, logger: logger))
    let transport = TLSServerTransport(listenerFactory: factory, config: .init(config))
    self.init(
      name: name, security: tls.isMutual ? "mutual TLS 1.3" : "TLS 1.3", transport: transport,
      services: services, interceptors: interceptors, logger: logger, onDrain: onDrain,
      boundAddress: { await transport.listeningAddress })
  }

  private init<Transport: ServerTransport>(
    name: String, security: String, transport: Transport,
    services: [any RegistrableRPCService], interceptors: [any ServerInterceptor],
    logger: Logger, onDrain: @escaping @Sendable () -> Void,
    boundAddress: @escaping @Sendable () async -> SocketAddress?
  ) {
    let server = GRPCServer(transport: transport, services: services, interceptors: interceptors)
    self.name = name
    self.security = security
    self.logger = logger
    self.onDrain = onDrain
    self.serve = { try await server.serve() }
    self.stop = { server.beginGracefulShutdown() }
    self.boundAddress = boundAddress
  }

  /// Defaults for every server we run: small messages, HTTP/2 keepalive so that dead peers
  /// are found within a minute, a bound on concurrent streams per connection, and idle
  /// connections closed after `maxIdleTime` (5 minutes by default; `nil` keeps them).
  ///
  /// Idle means no open stream: a client that holds one stream open, as the gateway's do, is
  /// never idle, whatever the time between its messages.
  public static func hardenedConfig(
    maxRequestBytes: Int = 64 * 1024,
    maxConcurrentStreams: Int = 256,
    maxIdleTime: Duration? = .seconds(5 * 60)
  ) -> HTTP2ServerTransport.Posix.Config {
    .defaults { config in
      config.connection.maxIdleTime = maxIdleTime
      config.rpc.maxRequestPayloadSize = maxRequestBytes
      config.http2.maxConcurrentStreams = maxConcurrentStreams
      config.connection.keepalive.time = .seconds(30)
      config.connection.keepalive.timeout = .seconds(10)
      config.connection.keepalive.clientBehavior.allowWithoutCalls = true
      config.connection.keepalive.clientBehavior.minPingIntervalWithoutCalls = .seconds(5)
    }
  }

  /// The bound address, once listening (`nil` if the server failed to bind).
  public var listeningAddress: HostPort? {
    get async {
      guard let address = await boundAddress() else { return nil }
      return HostPort(address)
    }
  }

  /// Serves until ``beginGracefulShutdown()``, without a service group (tests, tools).
  public func serveUntilStopped() async throws { try await serve() }

  /// Stops accepting new RPCs and lets in-flight ones finish.
  public func beginGracefulShutdown() { stop() }

  public func run() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        try await self.serve()
      }
      group.addTask {
        if let address = await self.listeningAddress {
          self.logger.info(
            "gRPC server listening",
            metadata: [
              "server.name": "\(self.name)", "server.address": "\(address)",
              "server.security": "\(self.security)",
            ])
        }
      }
      try await gracefulShutdown()
      self.logger.info("gRPC server draining", metadata: ["server.name": "\(self.name)"])
      // First end our own long-lived streams (health watches, …), then stop accepting.
      self.onDrain()
      self.stop()
    }
  }
}

extension HTTP2ServerTransport.Custom.Config {
  /// The settings of a Posix transport's configuration, e.g.
  /// ``GRPCServerService/hardenedConfig(maxRequestBytes:maxConcurrentStreams:maxIdleTime:)``, for a server
  /// on a custom listener such as ``TLSServerTransport``, so that one definition of our
  /// transport defaults serves both kinds of server.
  public init(_ posix: HTTP2ServerTransport.Posix.Config) {
    self.init(
      compression: posix.compression, connection: posix.connection, http2: posix.http2,
      rpc: posix.rpc, channelDebuggingCallbacks: posix.channelDebuggingCallbacks)
  }
}
