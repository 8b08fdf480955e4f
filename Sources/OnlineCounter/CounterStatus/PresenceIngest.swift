public import CounterModel
public import CounterProtos
public import GRPCCore
public import Logging
public import Metrics
public import PresenceStore
import ServiceKit
public import TLSKit
public import Tracing

/// `tenten.interview.PresenceIngest`: stores the gateways' coalesced presence batches.
///
/// A record says how long ago its user was seen (`seen_ago_ms`, measured on the gateway's
/// monotonic clock) and is placed on this server's clock: now minus that. So the gateway's and
/// this server's wall clocks need not agree; how far apart they are is observed as the gauge
/// `status_gateway_clock_skew_seconds` (per gateway, positive when the gateway is ahead; it
/// includes the request's transit time, milliseconds). A record from a gateway that predates
/// the field carries only the gateway's wall-clock timestamp, which is used as it is and
/// refused when more than ``maxFutureSkewMillis`` ahead of this server's clock (a gateway with
/// a broken clock must not keep a user online for hours).
///
/// Records with a malformed user id or a negative age are refused too, and counted in
/// `rejected`. Storing is idempotent (max per user), so a gateway may retry any batch.
public struct PresenceIngest: Tenten_Interview_PresenceIngest.ServiceProtocol {
  public static let serviceName = "tenten.interview.PresenceIngest"
  /// Largest batch accepted; gateways send at most 5 000 records per call.
  public static let maxRecordsPerBatch = 50_000
  public static let maxFutureSkewMillis: Int64 = 5_000

  private let store: any PresenceStore
  private let clock: MillisClock
  private let logger: Logger
  private let tracer: any Tracer
  private let accepted: Counter
  private let rejected: Counter
  private let storeFailures: Counter
  private let metrics: any MetricsFactory
  private let peers: PeerRegistry?

  /// - Parameters:
  ///   - tracer: each batch is a `presence.ingest` server span, a child of the gateway's
  ///     `presence.report` span when the request carries its trace context.
  ///   - metrics: where the record counters and the clock skew gauge go (tests pass their own).
  ///   - peers: With mutual TLS, the verified client certificates: only role `gateway` may
  ///     report (`nil`: no certificates to check, e.g. plaintext on a private network).
  public init(
    store: any PresenceStore, clock: @escaping MillisClock = systemMillisClock, logger: Logger,
    tracer: any Tracer = InstrumentationSystem.tracer,
    metrics: any MetricsFactory = MetricsSystem.factory, peers: PeerRegistry? = nil
  ) {
    self.peers = peers
    self.store = store
    self.clock = clock
    self.logger = logger
    self.tracer = tracer
    self.metrics = metrics
    self.accepted = Counter(
      label: "status_presence_records_total", dimensions: [("result", "accepted")],
      factory: metrics)
    self.rejected = Counter(
      label: "status_presence_records_total", dimensions: [("result", "rejected")],
      factory: metrics)
    self.storeFailures = Counter(label: "status_store_failures_total", factory: metrics)
  }

  public func reportPresence(
    request: ServerRequest<Tenten_Interview_ReportPresenceRequest>, context: ServerContext
  ) async throws -> ServerResponse<Tenten_Interview_ReportPresenceResponse> {
    try authorize(context)
    let caller = TraceContextMetadata.extract(from: request.metadata, tracer: tracer)
    let response = try await tracer.withSpan(
      "presence.ingest", context: caller, ofKind: .server
    ) { span in
      span.attributes["rpc.system"] = "grpc"
      span.attributes["presence.gateway_id"] = request.message.gatewayID
      span.attributes["presence.records"] = request.message.records.count
      let response = try await ingest(request.message)
      span.attributes["presence.rejected"] = Int(response.rejected)
      return response
    }
    return ServerResponse(message: response)
  }

  /// Validates and stores one batch.

  /// Readers and gateways share the CA (one port, one rule for who may connect), but only a
  /// gateway may write presence: a reader's certificate must not be able to fill the store.
  private func authorize(_ context: ServerContext) throws(RPCError) {
    guard let peers else { return }
    do {
      _ = try peers.caller(of: context, roles: [.gateway], api: "presence ingest")
    } catch {
      logger.info(
        "presence report refused",
        metadata: ["status.remote": "\(context.remotePeer)", "error": "\(error)"])
      throw error
    }
  }

  func ingest(
    _ request: Tenten_Interview_ReportPresenceRequest
  ) async throws -> Tenten_Interview_ReportPresenceResponse {
    guard request.records.count <= Self.maxRecordsPerBatch else {
      throw RPCError(
        code: .invalidArgument,
        message: "batch of \(request.records.count) records exceeds \(Self.maxRecordsPerBatch)")
    }
    let now = clock()
    let limit = now + Self.maxFutureSkewMillis
    var valid: [PresenceRecord] = []
    valid.reserveCapacity(request.records.count)
    var refused = 0
    var skew: Int64?
    for record in request.records {
      guard UserID.problem(with: record.userID) == nil else {
        refused += 1
        continue
      }
      let lastSeen: Int64
      if record.hasSeenAgoMs {
        guard record.seenAgoMs >= 0 else {
          refused += 1
          continue
        }
        lastSeen = now - record.seenAgoMs
        // The gateway's wall clock when it sent the batch, against ours when it arrived.
        if record.lastSeenUnixMs > 0 {
          skew = record.lastSeenUnixMs + record.seenAgoMs - now
        }
      } else {
        // A gateway that predates `seen_ago_ms`: its wall clock is all there is.
        guard record.lastSeenUnixMs > 0, record.lastSeenUnixMs <= limit else {
          refused += 1
          continue
        }
        lastSeen = record.lastSeenUnixMs
      }
      valid.append(PresenceRecord(userID: record.userID, lastSeenMillis: lastSeen))
    }
    if let skew {
      Gauge(
        label: "status_gateway_clock_skew_seconds", dimensions: [("gateway", request.gatewayID)],
        factory: metrics
      ).record(Double(skew) / 1_000)
    }
    if refused > 0 {
      logger.warning(
        "refused presence records",
        metadata: ["status.gateway_id": "\(request.gatewayID)", "status.refused": "\(refused)"])
    }
    if !valid.isEmpty {
      do {
        try await store.record(valid)
      } catch {
        storeFailures.increment()
        logger.error("storing presence failed", metadata: ["error": "\(error)"])
        // The gateway keeps the batch and retries: nothing is lost.
        throw RPCError(code: .unavailable, message: "presence store unavailable")
      }
    }
    accepted.increment(by: valid.count)
    rejected.increment(by: refused)
    return .with {
      $0.accepted = UInt32(valid.count)
      $0.rejected = UInt32(refused)
    }
  }
}
