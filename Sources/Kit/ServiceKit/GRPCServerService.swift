import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle

/// Runs a `GRPCServer` as a `Service`: serves until graceful shutdown begins, then stops
/// accepting new RPCs and lets in-flight ones finish (the service group's deadline bounds how
/// long that may take).
public final class GRPCServerService: Service, Sendable {
  /// The server, e.g. to read `listeningAddress` once it is bound.
  public let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let name: String
  private let logger: Logger
  private let onDrain: @Sendable () -> Void

  /// - Parameters:
  ///   - name: How logs name this server (`gateway`, `status`, …).
  ///   - address: Where to listen; port 0 picks a free port, logged once bound.
  ///   - services: The services to serve. Health and reflection are added by the caller (see
  ///     ``StandardServices``) so that tests can serve exactly what they need.
  ///   - config: Transport configuration; see ``GRPCServerService/hardenedConfig(maxRequestBytes:maxConcurrentStreams:)``.
  ///   - onDrain: Called when graceful shutdown begins, before the server stops accepting:
  ///     end long-lived streams here (e.g. ``HealthService/endWatches()``), because gRPC waits
  ///     for every open RPC to finish.
  public init(
    name: String,
    address: HostPort,
    services: [any RegistrableRPCService],
    config: HTTP2ServerTransport.Posix.Config = GRPCServerService.hardenedConfig(),
    interceptors: [any ServerInterceptor] = [],
    logger: Logger,
    onDrain: @escaping @Sendable () -> Void = {}
  ) {
    self.name = name
    self.logger = logger
    self.onDrain = onDrain
    let transport = HTTP2ServerTransport.Posix(
      address: address.host.contains(":")
        ? .ipv6(host: address.host, port: address.port)
        : .ipv4(host: address.host, port: address.port),
      transportSecurity: .plaintext,
      config: config)
    self.server = GRPCServer(transport: transport, services: services, interceptors: interceptors)
  }

  /// Wraps an already configured server (e.g. one on a custom TLS transport).
  public init(
    name: String, server: GRPCServer<HTTP2ServerTransport.Posix>, logger: Logger,
    onDrain: @escaping @Sendable () -> Void = {}
  ) {
    self.name = name
    self.logger = logger
    self.onDrain = onDrain
    self.server = server
  }

  /// Defaults for every server we run: small messages, HTTP/2 keepalive so that dead peers
  /// are found within a minute, and a bound on concurrent streams per connection.
  public static func hardenedConfig(
    maxRequestBytes: Int = 64 * 1024,
    maxConcurrentStreams: Int = 256
  ) -> HTTP2ServerTransport.Posix.Config {
    .defaults { config in
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
      guard let address = try? await server.listeningAddress else { return nil }
      if let ipv4 = address.ipv4 { return HostPort(host: ipv4.host, port: ipv4.port) }
      if let ipv6 = address.ipv6 { return HostPort(host: ipv6.host, port: ipv6.port) }
      return nil
    }
  }

  public func run() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        try await self.server.serve()
      }
      group.addTask {
        if let address = await self.listeningAddress {
          self.logger.info(
            "gRPC server listening",
            metadata: ["server.name": "\(self.name)", "server.address": "\(address)"])
        }
      }
      try await gracefulShutdown()
      self.logger.info("gRPC server draining", metadata: ["server.name": "\(self.name)"])
      // First end our own long-lived streams (health watches, …), then stop accepting.
      self.onDrain()
      self.server.beginGracefulShutdown()
    }
  }
}
