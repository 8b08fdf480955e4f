public import ConnectionKit
import GRPCCore
import GRPCNIOTransportHTTP2
public import JobWorkerCore
import JobWorkerProtos
public import Logging
public import ServiceKit
public import ServiceLifecycle
public import TLSKit

/// The job worker's gRPC server as a `Service`: mutual TLS 1.3 on one port, serving the job
/// API plus health and reflection.
///
/// It owns the `JobManager`'s lifetime end: on graceful shutdown it first stops every job
/// (which also ends every output stream with a final status), then drains the server.
public final class JobWorkerServer: Service, Sendable {
  public let manager: JobManager
  public let peers: PeerRegistry
  /// The JobWorker API implementation (e.g. to read ``JobWorkerService/activeOutputStreams``).
  public let service: JobWorkerService
  private let transport: TLSServerTransport
  private let server: GRPCServer<TLSServerTransport>
  private let standard: StandardServices
  private let logger: Logger

  /// - Parameters:
  ///   - address: Where to listen; port 0 picks a free port (see ``listeningAddress``).
  ///   - tls: Server certificate, key and the CA that client certificates must chain to.
  ///   - maxRequestBytes: Largest request message accepted.
  ///   - connectionLimits: Caps on connections and the handshake deadline, enforced by the
  ///     listener before any TLS work (see `ConnectionGuard`).
  public init(
    address: HostPort, tls: ServerTLSConfiguration, manager: JobManager,
    limits: JobWorkerService.Limits = .init(), maxRequestBytes: Int = 64 * 1024,
    connectionLimits: ConnectionLimits = .init(), logger: Logger
  ) throws {
    let peers = PeerRegistry()
    let factory = try TLSListenerFactory(
      host: address.host, port: address.port, configuration: tls, registry: peers,
      connectionGuard: ConnectionGuard(name: "jobworker", limits: connectionLimits, logger: logger))
    // The settings every server of ours uses, on our own TLS 1.3 transport.
    let hardened = GRPCServerService.hardenedConfig(maxRequestBytes: maxRequestBytes)
    var config = TLSServerTransport.Config.defaults
    config.rpc = hardened.rpc
    config.http2 = hardened.http2
    config.connection = hardened.connection
    let transport = TLSServerTransport(listenerFactory: factory, config: config)
    let service = JobWorkerService(manager: manager, peers: peers, limits: limits, logger: logger)
    let standard = try StandardServices(
      serving: [Jobworker_V1_JobWorker.descriptor.fullyQualifiedService],
      descriptorSets: [JobWorkerDescriptors.fileDescriptorSetBase64])
    self.manager = manager
    self.peers = peers
    self.service = service
    self.transport = transport
    self.standard = standard
    self.server = GRPCServer(transport: transport, services: [service] + standard.all)
    self.logger = logger
  }

  /// The bound address once listening; nil if binding failed or the server stopped.
  public var listeningAddress: HostPort? {
    get async {
      guard let address = await transport.listeningAddress else { return nil }
      if let ipv4 = address.ipv4 { return HostPort(host: ipv4.host, port: ipv4.port) }
      if let ipv6 = address.ipv6 { return HostPort(host: ipv6.host, port: ipv6.port) }
      return nil
    }
  }

  /// Serves until graceful shutdown (ServiceGroup) or ``stop()``.
  public func run() async throws {
    enum Finished { case serving, shutdownWatcher }
    try await withThrowingTaskGroup(of: Finished.self) { group in
      group.addTask {
        try await self.server.serve()
        return .serving
      }
      group.addTask {
        if let address = await self.listeningAddress {
          self.logger.info(
            "job worker listening (mTLS, TLS 1.3 only)",
            metadata: [
              "jobworker.address": "\(address)"
            ])
        }
        // Throws when cancelled, i.e. when serving already ended.
        if (try? await gracefulShutdown()) != nil { await self.stop() }
        return .shutdownWatcher
      }
      while let finished = try await group.next() {
        if finished == .serving { group.cancelAll() }
      }
    }
  }

  /// Stops every job (their streams end with a final status), then stops accepting calls
  /// and lets the in-flight ones finish.
  public func stop() async {
    logger.info("job worker shutting down: stopping jobs")
    standard.health.markAllNotServing()
    await manager.shutdown()
    server.beginGracefulShutdown()
  }
}
