import CounterProtos
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
public import Logging
public import ServiceKit
import Synchronization
public import TLSKit

/// Runs one or many simulated clients against the gateways.
///
/// Each client holds one `Connect` stream, sends its id as `client-id`, and answers every
/// `Ping` with EVEN or ODD by the parity of the Unix time in milliseconds at the moment it
/// answers. The streams are multiplexed over `connections` HTTP/2 connections (one
/// `GRPCClient` each), assigned round robin over the gateways. When its stream ends a client
/// reconnects over the next connection, which is on another gateway when there are several,
/// after a delay with full jitter that ``ReconnectPolicy`` chooses: at once after losing a
/// stream that worked, ≤ 1 s while gateways cannot be reached, growing to ``Configuration/maxBackoff``
/// when a gateway refuses.
///
/// Per client this costs one stream and two small tasks, so one process can simulate tens of
/// thousands of clients.
public struct CounterClient: Sendable {
  public struct Configuration: Sendable {
    public var ids: [String]
    public var gateways: [HostPort]
    public var connections: Int
    public var initialBackoff: Duration = .milliseconds(200)
    /// The longest backoff after a gateway refused a stream (full, …) or ended it for want of
    /// pongs.
    public var maxBackoff: Duration = .seconds(10)
    /// The longest backoff while attempts fail with `UNAVAILABLE` before any ping (connection
    /// refused, the connection still reconnecting, a draining gateway): short, so that a
    /// client alternates quickly to a gateway that is alive.
    public var unreachableMaxBackoff: Duration = .seconds(1)
    /// After a stream that worked is lost (its gateway died or drained), the client reconnects
    /// within this much, spread so that a dead gateway's clients do not arrive all at once.
    public var failoverSpread: Duration = .milliseconds(100)
    /// A stream ended for want of pongs resets the backoff only if it lived this long, so an
    /// overloaded client process does not churn (a stream lost otherwise always resets it).
    public var stableAfter: Duration = .seconds(10)
    /// The longest pause between the connection attempts of one HTTP/2 connection to a gateway
    /// that cannot be reached (gRPC's default grows to 2 minutes, during which every stream
    /// over that connection fails at once, so a gateway that came back stayed unused).
    public var maxConnectionBackoff: Duration = .seconds(1)
    /// Streams opened per second at start, so that N clients do not storm the gateway.
    public var startRate = 2_000
    /// How connections to the gateways are secured.
    public var security: ClientSecurity = .plaintext

    public init(ids: [String], gateways: [HostPort], connections: Int = 1) {
      self.ids = ids
      self.gateways = gateways
      self.connections = connections
    }
  }

  public let stats = ClientStats()
  private let config: Configuration
  private let logger: Logger

  public init(configuration: Configuration, logger: Logger) {
    precondition(!configuration.gateways.isEmpty, "at least one gateway")
    self.config = configuration
    self.logger = logger
  }

  /// Runs until cancelled, or until the gateway refuses every id.
  public func run() async throws {
    // A multiple of the gateway count, so that "the next connection" is another gateway.
    let gateways = config.gateways.count
    let count = (max(config.connections, gateways) + gateways - 1) / gateways * gateways
    let clients = try (0..<count).map { index in
      GRPCClient(
        transport: try HTTP2ClientTransport.Posix(
          target: config.gateways[index % gateways].resolvableTarget,
          transportSecurity: config.security.transportSecurity,
          config: .defaults {
            $0.backoff = .init(
              initial: .milliseconds(100), max: config.maxConnectionBackoff, multiplier: 1.6,
              jitter: 0.2)
          }))
    }
    try await withThrowingDiscardingTaskGroup { group in
      for client in clients {
        group.addTask { try await client.runConnections() }
      }
      await withDiscardingTaskGroup { simulated in
        for (index, id) in config.ids.enumerated() {
          simulated.addTask {
            let delay =
              Duration.seconds(1) * (Double(index) / Double(max(self.config.startRate, 1)))
            try? await Task.sleep(for: delay)
            await self.simulate(id: id, start: index % count, clients: clients)
          }
        }
      }
      // Every client ended (cancelled, or its id refused): close the connections.
      for client in clients { client.beginGracefulShutdown() }
    }
  }

  private func simulate(
    id: String, start: Int, clients: [GRPCClient<HTTP2ClientTransport.Posix>]
  ) async {
    var logger = self.logger
    logger[metadataKey: "client.id"] = "\(id)"
    // With many simulated clients, per-client state changes would flood the log.
    let level: Logger.Level = config.ids.count == 1 ? .info : .debug
    let policy = ReconnectPolicy(
      initialBackoff: config.initialBackoff, maxBackoff: config.maxBackoff,
      unreachableMaxBackoff: config.unreachableMaxBackoff,
      failoverSpread: config.failoverSpread, stableAfter: config.stableAfter)
    var connection = start
    var failures = 0
    while !Task.isCancelled {
      let gateway = config.gateways[connection % config.gateways.count]
      logger.log(level: level, "connecting", metadata: ["client.gateway": "\(gateway)"])
      let opened = ContinuousClock.now
      let outcome = await stream(id: id, client: clients[connection], logger: logger, level: level)
      if Task.isCancelled { return }
      if outcome.refusedID {
        logger.error(
          "gateway refused the client id; giving up",
          metadata: ["client.reason": "\(outcome.reason)"])
        return
      }
      let ending = ReconnectPolicy.ending(
        receivedPings: outcome.receivedPings, code: outcome.code,
        lived: ContinuousClock.now - opened)
      let delay = ReconnectPolicy.delay(cap: policy.cap(after: ending, failures: &failures))
      stats.streamEnded(reason: outcome.reason)
      logger.log(
        level: level, "disconnected; reconnecting",
        metadata: [
          "client.gateway": "\(gateway)", "client.reason": "\(outcome.reason)",
          "client.retry_in_ms": "\(delay / .milliseconds(1))",
        ])
      try? await Task.sleep(for: delay)
      connection = (connection + 1) % clients.count
    }
  }

  private struct Outcome: Sendable {
    var receivedPings: Bool
    var reason: String
    /// The error the stream ended with; nil when the gateway ended it without one.
    var code: RPCError.Code?
    /// The gateway refused the id itself: retrying cannot help.
    var refusedID = false
  }

  /// One stream, from open to end; never throws (the reason is returned).
  private func stream(
    id: String, client: GRPCClient<HTTP2ClientTransport.Posix>, logger: Logger,
    level: Logger.Level
  ) async -> Outcome {
    let gateway = Tenten_Interview_Gateway.Client(wrapping: client)
    // One pending answer at most: pongs answer "now", so a backlog would be meaningless.
    let (answers, answer) = AsyncStream.makeStream(
      of: Void.self, bufferingPolicy: .bufferingNewest(1))
    let stats = self.stats
    let pinged = PingedFlag()
    do {
      try await gateway.connect(
        metadata: ["client-id": .string(id)],
        requestProducer: { writer in
          for await _ in answers {
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            try await writer.write(.with { $0.status = now % 2 == 0 ? .even : .odd })
          }
        },
        onResponse: { response in
          defer { answer.finish() }
          var last: ContinuousClock.Instant?
          defer { if last != nil { stats.connectionChanged(by: -1) } }
          for try await _ in response.messages {
            let now = ContinuousClock.now
            if last == nil {
              stats.connectionChanged(by: 1)
              pinged.set()
              logger.log(level: level, "connected")
            }
            stats.ping(interval: last.map { now - $0 })
            last = now
            answer.yield()
          }
        })
      return Outcome(receivedPings: pinged.value, reason: "stream ended by gateway")
    } catch {
      answer.finish()
      let code = (error as? RPCError)?.code ?? .unknown
      return Outcome(
        receivedPings: pinged.value, reason: "\(error)", code: code,
        refusedID: code == .invalidArgument)
    }
  }
}

/// Whether a stream got as far as a ping: such a stream worked, so the backoff restarts.
private final class PingedFlag: Sendable {
  private let flag = Atomic(false)
  var value: Bool { flag.load(ordering: .relaxed) }
  func set() { flag.store(true, ordering: .relaxed) }
}
