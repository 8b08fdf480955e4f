import CounterModel
import CounterProtos
import GRPCCore
import Logging
import Metrics
import PresenceStore
import ServiceKit
public import Tracing

/// `tenten.interview.PresenceIngest`: stores the gateways' coalesced presence batches.
///
/// Records with a malformed user id, or a timestamp more than ``maxFutureSkewMillis`` ahead
/// of this server's clock, are refused and counted in `rejected` (a gateway with a broken
/// clock must not keep a user online for hours). Storing is idempotent (max per user), so a
/// gateway may retry any batch.
public struct PresenceIngest: Tenten_Interview_PresenceIngest.ServiceProtocol {
  public static let serviceName = "tenten.interview.PresenceIngest"
  /// Largest batch accepted; gateways send at most 5 000 records per call.
  public static let maxRecordsPerBatch = 50_000
  public static let maxFutureSkewMillis: Int64 = 5_000

  private let store: any PresenceStore
  private let clock: MillisClock
  private let logger: Logger
  private let tracer: any Tracer
  private let accepted = Counter(
    label: "status_presence_records_total", dimensions: [("result", "accepted")])
  private let rejected = Counter(
    label: "status_presence_records_total", dimensions: [("result", "rejected")])
  private let storeFailures = Counter(label: "status_store_failures_total")

  /// - Parameter tracer: each batch is a `presence.ingest` server span, a child of the
  ///   gateway's `presence.report` span when the request carries its trace context.
  public init(
    store: any PresenceStore, clock: @escaping MillisClock = systemMillisClock, logger: Logger,
    tracer: any Tracer = InstrumentationSystem.tracer
  ) {
    self.store = store
    self.clock = clock
    self.logger = logger
    self.tracer = tracer
  }

  public func reportPresence(
    request: ServerRequest<Tenten_Interview_ReportPresenceRequest>, context: ServerContext
  ) async throws -> ServerResponse<Tenten_Interview_ReportPresenceResponse> {
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
  func ingest(
    _ request: Tenten_Interview_ReportPresenceRequest
  ) async throws -> Tenten_Interview_ReportPresenceResponse {
    guard request.records.count <= Self.maxRecordsPerBatch else {
      throw RPCError(
        code: .invalidArgument,
        message: "batch of \(request.records.count) records exceeds \(Self.maxRecordsPerBatch)")
    }
    let limit = clock() + Self.maxFutureSkewMillis
    var valid: [PresenceRecord] = []
    valid.reserveCapacity(request.records.count)
    var refused = 0
    for record in request.records {
      if UserID.problem(with: record.userID) != nil || record.lastSeenUnixMs > limit
        || record.lastSeenUnixMs <= 0
      {
        refused += 1
        continue
      }
      valid.append(PresenceRecord(userID: record.userID, lastSeenMillis: record.lastSeenUnixMs))
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
