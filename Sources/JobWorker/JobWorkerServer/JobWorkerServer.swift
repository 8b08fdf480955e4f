public import ConnectionKit
public import JobWorkerCore
import JobWorkerProtos
public import Logging
public import ServiceKit
public import ServiceLifecycle
public import TLSKit

/// The job worker process, assembled: the one place that turns a ``Configuration`` into a
/// `JobManager`, the job API in front of it and the gRPC server (mutual TLS 1.3 on one port,
/// the job API plus health and reflection). The `jobworker` executable, the tests and the demo
/// all build it here, so what the tests run is what production runs.
///
/// The server owns the end of the manager's life: on graceful shutdown it first marks health
/// `NOT_SERVING` and stops every job (which also ends every output stream with a final
/// status), then stops accepting and drains.
///
/// ```swift
/// let worker = try await JobWorkerServer.build(configuration: configuration, logger: logger)
/// try await ServerRunner.run(services: worker.services, shutdown: shutdown, logger: logger)
/// ```
public struct JobWorkerServer: Sendable {
  /// Everything that decides how a job worker behaves; the defaults are the executable's.
  public struct Configuration: Sendable {
    /// Where clients connect; port 0 picks a free port (see
    /// ``GRPCServerService/listeningAddress``).
    public var listen: HostPort
    /// Server certificate, key and the CA that client certificates must chain to.
    public var tls: ServerTLSConfiguration
    /// The job manager: data directory, cgroup name, job limits, stop grace period, retention
    /// of ended jobs.
    public var manager: JobManager.Configuration
    /// How often ended jobs past the retention period or over the storage cap are forgotten
    /// (``RetentionSweeper``).
    public var retentionSweepInterval: Duration
    /// Server-side caps: running jobs per user, argument sizes, output chunk size.
    public var limits: JobWorkerAPI.Limits
    /// Largest request message accepted.
    public var maxRequestBytes: Int
    /// Caps on connections and the handshake deadline, enforced by the listener before any
    /// TLS work (see `ConnectionGuard`).
    public var connectionLimits: ConnectionLimits

    public init(
      listen: HostPort, tls: ServerTLSConfiguration, manager: JobManager.Configuration
    ) {
      self.listen = listen
      self.tls = tls
      self.manager = manager
      self.limits = JobWorkerAPI.Limits()
      self.retentionSweepInterval = .seconds(60)
      self.maxRequestBytes = 64 * 1024
      self.connectionLimits = ConnectionLimits()
    }
  }

  /// The jobs. Its shutdown is part of the server's drain; a caller whose services fail
  /// before that drain ran must call `shutdown()` itself (it is idempotent).
  public let manager: JobManager
  /// Who is connected, by client certificate.
  public let peers: PeerRegistry
  /// The JobWorker API implementation (e.g. to read ``JobWorkerAPI/activeOutputStreams``).
  public let service: JobWorkerAPI
  /// The gRPC server: the job API, health and reflection.
  public let server: GRPCServerService
  /// Health, `NOT_SERVING` once the server drains.
  public let health: HealthService
  /// Forgets ended jobs past the retention period or over the storage cap, every minute.
  public let retention: RetentionSweeper

  /// The services to run in one `ServiceGroup`: the sweeper first, so that it stops after
  /// the server has drained (graceful shutdown runs in reverse order).
  public var services: [any Service] { [retention, server] }

  /// Starts the job manager (it takes the data directory's and cgroup name's locks) and
  /// builds the server; nothing listens until ``services`` run.
  ///
  /// - Throws: `JobError` when the manager cannot run here (not root, no cgroups, the locks
  ///   are held by another live manager); an error when a TLS file cannot be loaded, after
  ///   shutting the manager down again.
  public static func build(
    configuration: Configuration, logger: Logger
  ) async throws -> JobWorkerServer {
    let standard = try StandardServices(
      serving: [Jobworker_V1_JobWorker.descriptor.fullyQualifiedService],
      descriptorSets: [JobWorkerDescriptors.fileDescriptorSetBase64])
    let health = standard.health
    let manager = try JobManager(configuration: configuration.manager, logger: logger)
    do {
      let peers = PeerRegistry()
      let service = JobWorkerAPI(
        manager: manager, peers: peers, limits: configuration.limits, logger: logger)
      let server = try GRPCServerService(
        name: "jobworker", address: configuration.listen, services: [service] + standard.all,
        tls: configuration.tls, peers: peers,
        config: GRPCServerService.hardenedConfig(maxRequestBytes: configuration.maxRequestBytes),
        connectionLimits: configuration.connectionLimits, logger: logger,
        onDrain: {
          logger.info("job worker shutting down: stopping jobs")
          health.markAllNotServing()
          await manager.shutdown()
        })
      return JobWorkerServer(
        manager: manager, peers: peers, service: service, server: server, health: health,
        retention: RetentionSweeper(
          manager: manager, interval: configuration.retentionSweepInterval))
    } catch {
      await manager.shutdown()
      throw error
    }
  }
}
