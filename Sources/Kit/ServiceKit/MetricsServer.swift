import ConnectionKit
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle
import Synchronization

/// Serves Prometheus text exposition on `GET /metrics` over plain HTTP/1.1.
///
/// Deliberately tiny: one route, `Connection: close` on every response, a per-connection
/// deadline, and a cap on concurrent connections, so a scraper (or anyone else) cannot tie it
/// up. Created bound (``bind(to:registry:logger:)``) so that a port clash fails at start-up and
/// tests can read the port the kernel picked.
public final class MetricsServer: Service, Sendable {
  /// The address the server is bound to.
  public let address: HostPort
  private let channel:
    NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
  private let registry: PrometheusCollectorRegistry
  private let logger: Logger
  private let connectionDeadline: Duration
  private let maxConnections: Int

  private init(
    address: HostPort,
    channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>,
    registry: PrometheusCollectorRegistry, logger: Logger, connectionDeadline: Duration,
    maxConnections: Int
  ) {
    self.address = address
    self.channel = channel
    self.registry = registry
    self.logger = logger
    self.connectionDeadline = connectionDeadline
    self.maxConnections = maxConnections
  }

  /// Binds the listening socket. Port 0 picks a free port; ``address`` tells which.
  public static func bind(
    to address: HostPort,
    registry: PrometheusCollectorRegistry,
    logger: Logger,
    connectionDeadline: Duration = .seconds(10),
    maxConnections: Int = 64
  ) async throws -> MetricsServer {
    let channel = try await ServerBootstrap(group: ProcessEventLoops.group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: 64)
      .bind(host: address.host, port: address.port) { child in
        child.eventLoop.makeCompletedFuture {
          try child.pipeline.syncOperations.configureHTTPServerPipeline(
            withErrorHandling: true)
          return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
            wrappingChannelSynchronously: child)
        }
      }
    let port = channel.channel.localAddress?.port ?? address.port
    let bound = HostPort(host: address.host, port: port)
    logger.info("metrics endpoint listening", metadata: ["metrics.address": "\(bound)"])
    return MetricsServer(
      address: bound, channel: channel, registry: registry, logger: logger,
      connectionDeadline: connectionDeadline, maxConnections: maxConnections)
  }

  /// Serves until graceful shutdown (scrapes are cheap: nothing is worth waiting for).
  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        try await self.serve()
      }
    } catch  where Task.isShuttingDownGracefully || Task.isCancelled {
      // Being stopped is how this service ends; whatever the accept loop threw on the way
      // out (CancellationError, a closed channel) is not a failure of the process.
    }
  }

  private func serve() async throws {
    let active = ManagedCounter()
    try await withThrowingDiscardingTaskGroup { group in
      try await channel.executeThenClose { inbound in
        for try await connection in inbound {
          guard active.increment(limit: maxConnections) else {
            // Over the cap: close at once rather than queue.
            try? await connection.channel.close()
            continue
          }
          group.addTask {
            defer { active.decrement() }
            await self.handle(connection)
          }
        }
      }
    }
  }

  private func handle(
    _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
  ) async {
    do {
      try await withDeadline(connectionDeadline) {
        try await connection.executeThenClose { inbound, outbound in
          var head: HTTPRequestHead?
          for try await part in inbound {
            switch part {
            case .head(let request): head = request
            case .body: continue
            case .end:
              guard let request = head else { return }
              try await self.respond(to: request, outbound)
              return
            }
          }
        }
      }
    } catch {
      logger.debug("metrics connection ended", metadata: ["error": "\(error)"])
    }
  }

  private func respond(
    to request: HTTPRequestHead, _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
  ) async throws {
    let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
    let status: HTTPResponseStatus
    let body: [UInt8]
    var headers = HTTPHeaders([("Connection", "close")])
    switch (request.method, path) {
    case (.GET, "/metrics"), (.HEAD, "/metrics"):
      status = .ok
      body = registry.emitToBuffer()
      headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
    case (_, "/metrics"):
      status = .methodNotAllowed
      body = Array("only GET /metrics is served\n".utf8)
      headers.add(name: "Allow", value: "GET, HEAD")
    default:
      status = .notFound
      body = Array("not found: this endpoint serves only GET /metrics\n".utf8)
    }
    headers.add(name: "Content-Length", value: "\(body.count)")
    try await outbound.write(
      .head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
    if request.method != .HEAD {
      try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
    }
    try await outbound.write(.end(nil))
  }
}

/// A counter of active connections with an upper bound.
private final class ManagedCounter: Sendable {
  private let value = Mutex(0)

  func increment(limit: Int) -> Bool {
    value.withLock { count in
      guard count < limit else { return false }
      count += 1
      return true
    }
  }

  func decrement() { value.withLock { $0 -= 1 } }
}
