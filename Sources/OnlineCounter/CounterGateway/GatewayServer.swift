public import ConnectionKit
import CounterProtos
public import Logging
public import ServiceKit
public import ServiceLifecycle
public import TLSKit
public import Tracing

/// The gateway process, assembled: the one place that turns a ``Configuration`` into the
/// gateway's services. The `gateway` executable, the tests and the demo all build it here, so
/// what the tests run is what production runs.
///
/// ```swift
/// let gateway = try GatewayServer.build(configuration: configuration, logger: logger)
/// try await ServerRunner.run(services: gateway.services, shutdown: shutdown, logger: logger)
/// ```
public struct GatewayServer: Sendable {
  /// Everything that decides how a gateway behaves; the defaults are the executable's.
  public struct Configuration: Sendable {
    /// Where clients connect; port 0 picks a free port (see ``GRPCServerService/listeningAddress``).
    public var listen: HostPort
    /// TLS 1.3 for clients (mutual when it names a client CA); `nil` is plaintext.
    public var tls: ServerTLSConfiguration?
    /// Pong timeout, most clients at once, drain timeout.
    public var gateway: Gateway.Configuration
    /// The id reported to status, the status endpoints, how they are secured and how presence
    /// is flushed to them (interval, call timeout, backoff, the final flush's budget).
    public var reporter: PresenceReporter.Configuration
    /// Largest request message accepted: a pong is a few bytes.
    public var maxRequestBytes: Int
    /// Streams one HTTP/2 connection may hold; `nil` is `min(maxClients, 2^20)`: load
    /// generators multiplex many client streams over few connections, so the per connection
    /// limit is the global one, and ``Gateway/Configuration/maxClients`` bounds the total.
    public var maxConcurrentStreams: Int?
    /// Pings a stream may have written but not yet sent (its client stopped reading: its
    /// flow-control window stays closed, or its connection does not drain) before it is reset.
    /// A reading client has none pending; 8 is 8 seconds of a stuck one, a few KB.
    public var maxUnsentPings: Int
    /// Caps on connections and the handshake deadline, enforced by the listener (see
    /// `ConnectionGuard`). Clients multiplex many streams over few connections, so these cap
    /// connections, not clients: ``Gateway/Configuration/maxClients`` bounds the streams.
    public var connectionLimits: ConnectionLimits
    /// When a quiet connection is pinged (30 s) and how long it has to answer (10 s).
    public var keepalive = ConnectionKeepalive()

    /// - Parameters:
    ///   - listen: Where clients connect.
    ///   - gatewayID: The id reported to status, for its logs.
    ///   - statusEndpoints: The status services presence is reported to, round robin.
    public init(listen: HostPort, gatewayID: String, statusEndpoints: [HostPort]) {
      self.listen = listen
      self.tls = nil
      self.gateway = Gateway.Configuration()
      self.reporter = PresenceReporter.Configuration(
        gatewayID: gatewayID, endpoints: statusEndpoints)
      self.maxRequestBytes = 1024
      self.maxConcurrentStreams = nil
      self.maxUnsentPings = 8
      self.connectionLimits = ConnectionLimits()
    }

    /// ``maxConcurrentStreams``, or its default derived from the client limit.
    var effectiveMaxConcurrentStreams: Int {
      maxConcurrentStreams ?? min(gateway.maxClients, 1 << 20)
    }
  }

  /// The `Connect` RPC, the ping timer and the drain.
  public let gateway: Gateway
  /// Flushes presence to status.
  public let reporter: PresenceReporter
  /// The gRPC port: `Connect` on the gateway's own HTTP/2 pipeline, health and reflection
  /// through grpc-swift in process.
  public let server: GatewayListener
  /// Health, `NOT_SERVING` once the gateway drains.
  public let health: HealthService

  /// The services to run in one `ServiceGroup`, in start order. Graceful shutdown runs in
  /// reverse: the gateway drains its streams first (clients go elsewhere), then the server
  /// stops, and the reporter flushes last.
  public var services: [any Service] {
    [reporter, server, gateway]
  }

  /// Builds a gateway; nothing listens or connects until ``services`` run.
  ///
  /// - Parameter tracer: Streams and presence flushes become spans; the default is the
  ///   process-wide tracer, a no-op unless tracing was bootstrapped.
  /// - Throws: When a TLS certificate, key or CA file cannot be loaded.
  public static func build(
    configuration: Configuration, logger: Logger,
    tracer: any Tracer = InstrumentationSystem.tracer
  ) throws -> GatewayServer {
    let reporter = try PresenceReporter(
      configuration: configuration.reporter, logger: logger, tracer: tracer)
    let standard = try StandardServices(
      serving: [Gateway.serviceName], descriptorSets: [CounterDescriptors.fileDescriptorSetBase64])
    let gateway = Gateway(
      configuration: configuration.gateway, reporter: reporter, health: standard.health,
      logger: logger, tracer: tracer)
    var listener = GatewayListener.Configuration(
      address: configuration.listen, tls: configuration.tls,
      maxConcurrentStreams: configuration.effectiveMaxConcurrentStreams,
      maxRequestBytes: configuration.maxRequestBytes,
      maxUnsentPings: configuration.maxUnsentPings,
      connectionLimits: configuration.connectionLimits)
    listener.keepalive = configuration.keepalive
    let server = try GatewayListener(
      configuration: listener, gateway: gateway, otherServices: standard.all, logger: logger)
    return GatewayServer(
      gateway: gateway, reporter: reporter, server: server, health: standard.health)
  }
}
