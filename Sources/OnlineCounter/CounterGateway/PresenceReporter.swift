public import CounterModel
import CounterProtos
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
public import Logging
import Metrics
public import ServiceKit
public import ServiceLifecycle
import Synchronization
public import TLSKit
public import Tracing

/// Reports presence to the status service, coalesced per user.
///
/// Pongs only update a dictionary `user → latest instant` (on the monotonic clock); a loop
/// flushes it at most once per
/// `flushInterval`, in batches of at most `batchSize`, round robin over the status endpoints
/// with a deadline per call. A failed batch is merged back (keeping the later timestamp), and
/// the loop backs off, briefly (≤ ``Configuration/maxBackoff``, 1 s, jittered), before the
/// next try on the next endpoint, so that presence lands within seconds of status coming
/// back however long it was away. So memory is
/// bounded by the number of distinct users, never by time, and no presence is lost while the
/// status service is away. On graceful shutdown it flushes what is left before returning.
public final class PresenceReporter: Service, Sendable {
  public struct Configuration: Sendable {
    public var gatewayID: String
    public var endpoints: [HostPort]
    public var flushInterval: Duration = .seconds(1)
    public var batchSize = 5_000
    public var callTimeout: Duration = .seconds(3)
    /// The longest wait between failed flushes (each is drawn from the upper half of a
    /// doubling backoff, so gateways retrying together spread out). Short on purpose: a
    /// retry is one call per status endpoint per gateway, cheap next to what a returning
    /// status absorbs, and the wait is how late users who joined during an outage are counted.
    public var maxBackoff: Duration = .seconds(1)
    /// The longest pause between connection attempts to a status endpoint that cannot be
    /// reached (gRPC's default grows to 2 minutes, during which every call fails at once).
    public var maxConnectionBackoff: Duration = .seconds(1)
    /// How long the final flush at shutdown may keep retrying.
    public var finalFlushBudget: Duration = .seconds(5)
    /// How connections to status are secured (mutual TLS in production across hosts).
    public var security: ClientSecurity = .plaintext
    /// The wall clock that stamps `last_seen_unix_ms`, which only status services that predate
    /// `seen_ago_ms` use (records carry how long ago each user was seen, on the monotonic
    /// clock, and status places that on its own clock); injectable so that tests can skew it.
    public var wallClock: MillisClock = systemMillisClock

    public init(gatewayID: String, endpoints: [HostPort]) {
      self.gatewayID = gatewayID
      self.endpoints = endpoints
    }
  }

  private struct State {
    var pending: [String: ContinuousClock.Instant] = [:]
    var nextEndpoint = 0
  }

  private let config: Configuration
  private let logger: Logger
  private let tracer: any Tracer
  private let state = Mutex(State())
  private let clients: [GRPCClient<HTTP2ClientTransport.Posix>]
  private let batches = Counter(label: "gateway_flush_batches_total")
  private let failures = Counter(label: "gateway_flush_failures_total")
  private let pendingGauge = Gauge(label: "gateway_presence_pending_users")

  /// - Parameter tracer: each flush is a `presence.flush` span with one `presence.report`
  ///   client span per batch, whose context goes to status in the request metadata.
  public init(
    configuration: Configuration, logger: Logger, tracer: any Tracer = InstrumentationSystem.tracer
  ) throws {
    precondition(!configuration.endpoints.isEmpty, "at least one status endpoint")
    self.config = configuration
    self.logger = logger
    self.tracer = tracer
    self.clients = try configuration.endpoints.map { endpoint in
      GRPCClient(
        transport: try HTTP2ClientTransport.Posix(
          target: endpoint.resolvableTarget,
          transportSecurity: configuration.security.transportSecurity,
          config: .defaults {
            $0.backoff = .init(
              initial: .milliseconds(100), max: configuration.maxConnectionBackoff,
              multiplier: 1.6, jitter: 0.2)
          }))
    }
  }

  /// Marks `userID` seen at `instant` (keeps the later of this and any pending one).
  public func record(_ userID: String, at instant: ContinuousClock.Instant) {
    state.withLock { $0.pending.keepLatest(instant, for: userID) }
  }

  /// Users waiting to be reported.
  public var pendingCount: Int { state.withLock { $0.pending.count } }

  public func run() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      for client in clients {
        group.addTask { try await client.runConnections() }
      }
      try? await cancelWhenGracefulShutdown {
        var failures = 0
        while !Task.isCancelled {
          try await Task.sleep(for: self.delay(afterFailures: failures))
          failures = await self.flushAll() ? 0 : failures + 1
        }
      }
      await finalFlush()
      for client in clients { client.beginGracefulShutdown() }
    }
  }

  /// The wait before the next flush: the flush interval, or after `failures` failed flushes
  /// in a row a doubling backoff capped at ``Configuration/maxBackoff``, drawn from its upper
  /// half (equal jitter: spread out, yet never a busy loop).
  func delay(afterFailures failures: Int) -> Duration {
    guard failures > 0 else { return config.flushInterval }
    let cap = min(config.maxBackoff, config.flushInterval * (1 << min(failures, 20)))
    return cap / 2 + (cap / 2) * Double.random(in: 0...1)
  }

  /// Sends everything pending; returns `false` (with the rest merged back) on a failure.
  @discardableResult
  public func flushAll() async -> Bool {
    let taken = state.withLock { state in
      defer { state.pending = [:] }
      return state.pending
    }
    pendingGauge.record(0)
    guard !taken.isEmpty else { return true }
    return await tracer.withSpan("presence.flush", context: .topLevel) { span in
      span.attributes["presence.users"] = taken.count
      let sent = await send(taken)
      if !sent { span.setStatus(SpanStatus(code: .error, message: "flush failed; will retry")) }
      return sent
    }
  }

  /// Sends `taken` in batches; on a failure merges the unsent rest back and returns `false`.
  private func send(_ taken: [String: ContinuousClock.Instant]) async -> Bool {
    var users = Array(taken)[...]
    while !users.isEmpty {
      let batch = users.prefix(config.batchSize)
      do {
        // Ages are measured right before each call: a batch that waited behind others (or a
        // retry) says how long ago its users were seen at the moment it is sent.
        try await send(Self.records(batch, now: .now, wallNow: config.wallClock()))
        users = users.dropFirst(batch.count)
      } catch {
        failures.increment()
        let left = users.count
        merge(users)
        // Cancelled by shutdown mid-call: expected, and the final flush sends it.
        logger.log(
          level: Task.isCancelled ? .debug : .warning, "presence flush failed; will retry",
          metadata: ["error": "\(error)", "gateway.pending": "\(left)"])
        return false
      }
    }
    return true
  }

  /// The records of `users` as of `now` (monotonic) and `wallNow` (the wall clock at the same
  /// moment): how long ago each was seen, and for older status services that instant on this
  /// gateway's wall clock.
  static func records(
    _ users: ArraySlice<(key: String, value: ContinuousClock.Instant)>,
    now: ContinuousClock.Instant, wallNow: Int64
  ) -> [Tenten_Interview_PresenceRecord] {
    users.map { user, seen in
      // Rounded down: a user is never placed earlier than it was seen, at most 1 ms later.
      let ago = max(Int64((now - seen) / .milliseconds(1)), 0)
      return .with {
        $0.userID = user
        $0.seenAgoMs = ago
        $0.lastSeenUnixMs = wallNow - ago
      }
    }
  }

  private func merge(_ users: ArraySlice<(key: String, value: ContinuousClock.Instant)>) {
    let count = state.withLock { state in
      for (user, seen) in users {
        state.pending.keepLatest(seen, for: user)
      }
      return state.pending.count
    }
    pendingGauge.record(count)
  }

  private func send(_ records: [Tenten_Interview_PresenceRecord]) async throws {
    let index = state.withLock { state in
      defer { state.nextEndpoint = (state.nextEndpoint + 1) % clients.count }
      return state.nextEndpoint
    }
    let ingest = Tenten_Interview_PresenceIngest.Client(wrapping: clients[index])
    var options = CallOptions.defaults
    options.timeout = config.callTimeout
    let request = Tenten_Interview_ReportPresenceRequest.with {
      $0.gatewayID = config.gatewayID
      $0.records = records
    }
    let response = try await tracer.withSpan("presence.report", ofKind: .client) { span in
      span.attributes["rpc.system"] = "grpc"
      span.attributes["rpc.method"] = "tenten.interview.PresenceIngest/ReportPresence"
      span.attributes["server.address"] = "\(config.endpoints[index])"
      span.attributes["presence.records"] = records.count
      var metadata = Metadata()
      TraceContextMetadata.inject(into: &metadata, tracer: tracer)
      return try await ingest.reportPresence(request, metadata: metadata, options: options)
    }
    batches.increment()
    if response.rejected > 0 {
      logger.warning(
        "status service refused presence records",
        metadata: ["gateway.rejected": "\(response.rejected)"])
    }
  }

  private func finalFlush() async {
    let clock = ContinuousClock()
    let deadline = clock.now + config.finalFlushBudget
    var backoff = Duration.milliseconds(100)
    while !(await flushAll()) {
      guard clock.now + backoff < deadline, !Task.isCancelled else {
        logger.error(
          "final presence flush incomplete", metadata: ["gateway.pending": "\(pendingCount)"])
        return
      }
      try? await Task.sleep(for: backoff)
      backoff = min(backoff * 2, .seconds(1))
    }
    logger.info("final presence flush done")
  }
}

extension Dictionary where Value: Comparable {
  /// Keeps the later of `value` and the one already held for `key`, with one hash lookup (this
  /// runs for every pong).
  fileprivate mutating func keepLatest(_ value: Value, for key: Key) {
    func raise(_ held: inout Value) { if value > held { held = value } }
    raise(&self[key, default: value])
  }
}
