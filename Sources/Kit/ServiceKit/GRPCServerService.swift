public import ConnectionKit
public import GRPCCore
public import GRPCNIOTransportHTTP2
public import Logging
public import ServiceLifecycle
public import TLSKit

/// Runs a `GRPCServer` as a `Service`: serves until graceful shutdown begins, then stops
/// accepting new RPCs and lets in-flight ones finish (the service group's deadline bounds how
/// long that may take). Every server of ours (gateway, status, job worker) is one of these.
public final class GRPCServerService: Service, Sendable {
  private let name: String
  private let address: HostPort
  private let security: String
  private let logger: Logger
  private let onDrain: @Sendable () async -> Void
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
  ///   - onDrain: Awaited when graceful shutdown begins, before the server stops accepting:
  ///     end long-lived streams here (e.g. the job worker stopping its jobs, which ends their
  ///     output streams), because gRPC waits for every open RPC to finish. Health watches of a
  ///     served ``HealthService`` are ended by the server itself.
  public convenience init(
    name: String,
    address: HostPort,
    services: [any RegistrableRPCService],
    config: HTTP2ServerTransport.Posix.Config = GRPCServerService.hardenedConfig(),
    connectionLimits: ConnectionLimits = .init(),
    interceptors: [any ServerInterceptor] = [],
    logger: Logger,
    onDrain: @escaping @Sendable () async -> Void = {}
  ) {
    let factory = PlaintextListenerFactory(
      host: address.host, port: address.port,
      connectionGuard: ConnectionGuard(name: name, limits: connectionLimits, logger: logger))
    let transport = PlaintextServerTransport(listenerFactory: factory, config: .init(config))
    self.init(
      name: name, address: address, security: "plaintext", transport: transport, services: services,
      interceptors: interceptors, logger: logger, onDrain: onDrain,
      boundAddress: { await transport.listeningAddress })
  }

  /// A server that is plaintext when `tls` is `nil`, else TLS 1.3 only (mutual when the
  /// configuration names a client CA); the other parameters are as for the plaintext one.
  /// Throws when a certificate, key or CA file cannot be loaded.
  ///
  /// - Parameter peers: With mutual TLS, records each connection's client certificate so
  ///   that handlers can ask who the caller is (``PeerRegistry/identity(for:)``).
  public convenience init(
    name: String,
    address: HostPort,
    services: [any RegistrableRPCService],
    tls: ServerTLSConfiguration?,
    peers: PeerRegistry? = nil,
    config: HTTP2ServerTransport.Posix.Config = GRPCServerService.hardenedConfig(),
    connectionLimits: ConnectionLimits = .init(),
    interceptors: [any ServerInterceptor] = [],
    logger: Logger,
    onDrain: @escaping @Sendable () async -> Void = {}
  ) throws {
    guard let tls else {
      precondition(peers == nil, "a peer registry needs mutual TLS")
      self.init(
        name: name, address: address, services: services, config: config,
        connectionLimits: connectionLimits, interceptors: interceptors, logger: logger,
        onDrain: onDrain)
      return
    }
    let factory = try TLSListenerFactory(
      host: address.host, port: address.port, configuration: tls, registry: peers,
      connectionGuard: ConnectionGuard(name: name, limits: connectionLimits, logger: logger))
    let transport = TLSServerTransport(listenerFactory: factory, config: .init(config))
    self.init(
      name: name, address: address, security: tls.isMutual ? "mutual TLS 1.3" : "TLS 1.3",
      transport: transport, services: services, interceptors: interceptors, logger: logger,
      onDrain: onDrain,
      boundAddress: { await transport.listeningAddress })
  }

  private init<Transport: ServerTransport>(
    name: String, address: HostPort, security: String, transport: Transport,
    services: [any RegistrableRPCService], interceptors: [any ServerInterceptor],
    logger: Logger, onDrain: @escaping @Sendable () async -> Void,
    boundAddress: @escaping @Sendable () async -> SocketAddress?
  ) {
    let server = GRPCServer(transport: transport, services: services, interceptors: interceptors)
    // A health Watch never ends by itself, and gRPC's graceful shutdown waits for every open
    // RPC: a load balancer's watch would hold a draining server until the shutdown grace ran
    // out. So a server that serves health ends its watches (with NOT_SERVING) when it drains.
    let health = services.compactMap { $0 as? HealthService }
    self.name = name
    self.address = address
    self.security = security
    self.logger = logger
    self.onDrain = onDrain
    self.serve = { try await server.serve() }
    self.stop = {
      for service in health { service.endWatches() }
      server.beginGracefulShutdown()
    }
    self.boundAddress = boundAddress
  }

  /// Defaults for every server we run: small messages (a larger one is answered
  /// `RESOURCE_EXHAUSTED` naming the limit, and a bad compressed flag `INTERNAL`, by
  /// ``RequestMessageGuard`` rather than reset by the transport), HTTP/2 keepalive so that
  /// dead peers are found within a minute, a bound on concurrent streams per connection, idle
  /// connections closed after `maxIdleTime` (5 minutes by default; `nil` keeps them), and
  /// client pings paced (not refused) so that grpc-go and grpc-java clients, whose
  /// flow-control probing pings about once per message received, are not disconnected by
  /// swift-nio-http2's limit of 200 control frames in 30 s (see ``PingPacingHandler``).
  ///
  /// Idle means no open stream: a client that holds one stream open, as the gateway's do, is
  /// never idle, whatever the time between its messages.
  ///
  /// - Parameter maxUnsentResponseMessages: With a value, a stream that has more response
  ///   messages written but not yet sent (its client stopped reading) is reset: the gateway's
  ///   bound on what a stuck client costs (see ``RequestMessageGuard``). `nil` for streams
  ///   whose messages are large and legitimately wait for flow control (job output).
  public static func hardenedConfig(
    maxRequestBytes: Int = 64 * 1024,
    maxConcurrentStreams: Int = 256,
    maxIdleTime: Duration? = .seconds(5 * 60),
    maxUnsentResponseMessages: Int? = nil
  ) -> HTTP2ServerTransport.Posix.Config {
    .defaults { config in
      config.connection.maxIdleTime = maxIdleTime
      config.rpc.maxRequestPayloadSize = maxRequestBytes
      config.http2.maxConcurrentStreams = maxConcurrentStreams
      config.connection.keepalive.time = .seconds(30)
      config.connection.keepalive.timeout = .seconds(10)
      config.connection.keepalive.clientBehavior.allowWithoutCalls = true
      config.connection.keepalive.clientBehavior.minPingIntervalWithoutCalls = .seconds(5)
      config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
        PingPacingHandler.install(on: channel)
      }
      // Oversized messages and bad compressed flags get a status instead of a reset.
      config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { channel in
        RequestMessageGuard.install(
          on: channel, maxMessageBytes: maxRequestBytes,
          maxUnsentMessages: maxUnsentResponseMessages)
      }
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

  /// Ends health watches, stops accepting new RPCs and lets in-flight ones finish.
  public func beginGracefulShutdown() { stop() }

  public func run() async throws {
    // Serving and the shutdown watch are sibling tasks, so that whichever ends first ends the
    // other: a server that cannot bind its port fails at once (the process exits with the
    // address and the reason) instead of waiting for a shutdown signal that never comes.
    enum Ended { case serving, other }
    try await withThrowingTaskGroup(of: Ended.self) { group in
      group.addTask {
        do {
          try await self.serve()
        } catch {
          let failure = ServerError(name: self.name, address: self.address, cause: error)
          self.logger.error(
            "gRPC server failed",
            metadata: [
              "server.name": "\(self.name)", "server.address": "\(self.address)",
              "error": "\(failure.reason)",
            ])
          throw failure
        }
        return .serving
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
        return .other
      }
      group.addTask {
        // Throws only when cancelled: serving ended first.
        guard (try? await gracefulShutdown()) != nil else { return .other }
        self.logger.info("gRPC server draining", metadata: ["server.name": "\(self.name)"])
        // First end our own long-lived streams (jobs, …), then health watches, then stop
        // accepting.
        await self.onDrain()
        self.stop()
        return .other
      }
      while let ended = try await group.next() {
        if ended == .serving { group.cancelAll() }
      }
    }
  }
}

/// A gRPC server stopped serving with an error, most often because it could not listen: the
/// address is in use, not one of this host's, or needs privileges (the reason says which).
public struct ServerError: Error, CustomStringConvertible {
  /// The server's name (`gateway`, `status`, …).
  public var name: String
  /// The address it was configured to listen on.
  public var address: HostPort
  /// The innermost cause, as the system reported it.
  public var reason: String

  public init(name: String, address: HostPort, cause: any Error) {
    self.name = name
    self.address = address
    self.reason = ServerError.innermost(cause)
  }

  public var description: String {
    "gRPC server \(name) on \(address) failed: \(reason)"
  }

  /// gRPC wraps the transport's error (e.g. NIO's `bind(…): Address already in use`) in
  /// `RuntimeError`s; the innermost one says what went wrong.
  private static func innermost(_ error: any Error) -> String {
    var current: any Error = error
    while true {
      if let runtime = current as? RuntimeError, let cause = runtime.cause {
        current = cause
      } else if let rpc = current as? RPCError, let cause = rpc.cause {
        current = cause
      } else {
        return "\(current)"
      }
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
