public import GRPCCore
public import ServiceKitProtos
import Synchronization

/// The standard `grpc.health.v1.Health` service.
///
/// The server's overall health is the empty service name `""`. Components flip statuses with
/// ``setStatus(_:for:)``, e.g. to `NOT_SERVING` when draining so that load balancers stop
/// routing new clients here. `Watch` streams every change; each watcher keeps only the newest
/// status it has not yet sent, so a slow watcher costs one value of memory.
public final class HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
  public typealias ServingStatus = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private struct State {
    var statuses: [String: ServingStatus] = [:]
    var watchers: [Int: (service: String, continuation: AsyncStream<ServingStatus>.Continuation)] = [:]
    var nextWatcher = 0
  }

  private let state = Mutex(State())

  /// Creates the service with `""` (the whole server) and `services` marked `SERVING`.
  public init(serving services: [String] = []) {
    state.withLock { state in
      state.statuses[""] = .serving
      for service in services { state.statuses[service] = .serving }
    }
  }

  /// Sets the status of `service` (`""` for the whole server) and notifies its watchers.
  public func setStatus(_ status: ServingStatus, for service: String = "") {
    let toNotify = state.withLock { state in
      state.statuses[service] = status
      return state.watchers.values.filter { $0.service == service }.map(\.continuation)
    }
    for continuation in toNotify { continuation.yield(status) }
  }

  /// Marks every known service `NOT_SERVING`: the first step of a graceful shutdown.
  public func markAllNotServing() {
    let services = state.withLock { Array($0.statuses.keys) }
    for service in services { setStatus(.notServing, for: service) }
  }

  /// Marks everything `NOT_SERVING`, sends that to every watcher, and ends their streams so
  /// that a draining server is not held open by health watchers.
  public func endWatches() {
    markAllNotServing()
    let continuations = state.withLock { state in
      defer { state.watchers.removeAll() }
      return state.watchers.values.map(\.continuation)
    }
    for continuation in continuations { continuation.finish() }
  }

  /// The current status of `service`, or `nil` when it is unknown.
  public func status(of service: String) -> ServingStatus? {
    state.withLock { $0.statuses[service] }
  }

  public func check(
    request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    guard let status = status(of: request.service) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = status }
  }

  public func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    let (stream, continuation) = AsyncStream.makeStream(
      of: ServingStatus.self, bufferingPolicy: .bufferingNewest(1))
    let id = state.withLock { state in
      let id = state.nextWatcher
      state.nextWatcher += 1
      state.watchers[id] = (request.service, continuation)
      // The first message is the current status (SERVICE_UNKNOWN for an unknown service).
      continuation.yield(state.statuses[request.service] ?? .serviceUnknown)
      return id
    }
    defer { _ = state.withLock { $0.watchers.removeValue(forKey: id) } }
    // The stream ends when the client cancels the RPC (gRPC signals that through the RPC
    // cancellation handle, not by cancelling this task), when this task is cancelled, or
    // when the server drains (``endWatches()``).
    try await withRPCCancellationHandler {
      try await withTaskCancellationHandler {
        for await status in stream {
          try await response.write(.with { $0.status = status })
        }
      } onCancel: {
        continuation.finish()
      }
    } onCancelRPC: {
      continuation.finish()
    }
  }
}
