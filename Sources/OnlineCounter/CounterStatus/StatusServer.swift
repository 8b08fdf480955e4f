public import ConnectionKit
public import CounterModel
import CounterProtos
import GRPCNIOTransportHTTP2
public import Logging
import NIOCore
public import PresenceStore
public import ServiceKit
public import ServiceLifecycle
public import TLSKit
public import Tracing

/// The status process, assembled: the one place that turns a ``Configuration`` into the status
/// service's services. The `status` executable, the tests and the demo all build it here, so
/// what the tests run is what production runs.
///
/// ```swift
/// let status = try await StatusServer.build(configuration: configuration, logger: logger)
/// try await ServerRunner.run(services: status.services, shutdown: shutdown, logger: logger)
/// ```
public struct StatusServer: Sendable {
  /// Everything that decides how a status service behaves; the defaults are the executable's.
  public struct Configuration: Sendable {
    /// Where gateways and readers connect; port 0 picks a free port (see
    /// ``GRPCServerService/listeningAddress``).
    public var listen: HostPort
    /// The presence store: `sqlite:PATH` or `postgres://…` (see `makePresenceStore(url:…)`).
    public var storeURL: String
    /// How long a count may be served from cache (a burst of queries costs one database
    /// query); `nil` disables the cache.
    public var countCacheMaxAge: Duration?
    /// TLS 1.3 (mutual when it names a client CA); `nil` is plaintext.
    public var tls: ServerTLSConfiguration?
    /// Largest request message accepted: a gateway's batch of up to 5 000 records.
    public var maxRequestBytes: Int
    /// How often users older than the window are deleted.
    public var pruneInterval: Duration
    /// Caps on connections and the handshake deadline, enforced by the listener (see
    /// `ConnectionGuard`).
    public var connectionLimits: ConnectionLimits
    /// The wall clock the window, the future skew and pruning are measured against;
    /// injectable so that tests can move time.
    public var clock: MillisClock

    public init(listen: HostPort, storeURL: String) {
      self.listen = listen
      self.storeURL = storeURL
      self.countCacheMaxAge = .seconds(1)
      self.tls = nil
      self.maxRequestBytes = 4 << 20
      self.pruneInterval = .seconds(30)
      self.connectionLimits = ConnectionLimits()
      self.clock = systemMillisClock
    }
  }

  /// The presence store (opened, not yet run).
  public let store: any PresenceStore
  /// `FetchOnlineUsersInLast3Mins`; ``StatusReader/onlineUsers()`` also reads the count
  /// without a connection.
  public let reader: StatusReader
  /// `ReportPresence`.
  public let ingest: PresenceIngest
  /// Deletes users older than the window.
  public let pruner: PresencePruner
  /// The gRPC server: reader, ingest, health and reflection.
  public let server: GRPCServerService
  /// Health.
  public let health: HealthService

  /// The services to run in one `ServiceGroup`, in start order. Graceful shutdown runs in
  /// reverse: the server stops first, the store closes last.
  public var services: [any Service] { [store, pruner, server] }

  /// Opens the store and builds the server; nothing listens until ``services`` run.
  ///
  /// - Parameter tracer: Queries, batches and store calls become spans; the default is the
  ///   process-wide tracer, a no-op unless tracing was bootstrapped.
  /// - Throws: ``PresenceStoreError`` for a bad store URL or a SQLite file that cannot be
  ///   opened; an error when a TLS certificate, key or CA file cannot be loaded.
  public static func build(
    configuration: Configuration, logger: Logger,
    tracer: any Tracer = InstrumentationSystem.tracer
  ) async throws -> StatusServer {
    let store = try await makePresenceStore(
      url: configuration.storeURL, logger: logger,
      countCacheMaxAge: configuration.countCacheMaxAge, tracer: tracer)
    let clock = configuration.clock
    let reader = StatusReader(store: store, clock: clock, logger: logger, tracer: tracer)
    // With mutual TLS, the server records each connection's verified certificate so that
    // ingest can require role gateway.
    let peers = configuration.tls?.isMutual == true ? PeerRegistry() : nil
    let ingest = PresenceIngest(
      store: store, clock: clock, logger: logger, tracer: tracer, peers: peers)
    let pruner = PresencePruner(
      store: store, clock: clock, interval: configuration.pruneInterval, logger: logger)
    let standard = try StandardServices(
      serving: [StatusReader.serviceName, PresenceIngest.serviceName],
      descriptorSets: [CounterDescriptors.fileDescriptorSetBase64])
    var config = GRPCServerService.hardenedConfig(maxRequestBytes: configuration.maxRequestBytes)
    if let cache = (store as? CachedPresenceStore)?.cache {
      // Cached counts are answered on the event loop (see CachedFetchHandler), behind the
      // message guard: installed first, then the guard goes first.
      let installGuard = config.channelDebuggingCallbacks.onAcceptHTTP2Stream
      config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { channel in
        let installed = CachedFetchHandler.install(
          on: channel, cache: cache, clock: clock, tracer: tracer)
        guard let installGuard else { return installed }
        return installed.flatMap { installGuard(channel) }
      }
    }
    let server = try GRPCServerService(
      name: "status", address: configuration.listen,
      services: [reader, ingest] + standard.all, tls: configuration.tls, peers: peers,
      config: config, connectionLimits: configuration.connectionLimits, logger: logger)
    return StatusServer(
      store: store, reader: reader, ingest: ingest, pruner: pruner, server: server,
      health: standard.health)
  }
}
