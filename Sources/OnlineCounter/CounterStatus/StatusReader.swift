public import CounterModel
public import CounterProtos
public import GRPCCore
public import Logging
public import PresenceStore
public import Tracing

/// `tenten.interview.StatusReader`: the number of unique users whose last EVEN/ODD pong is
/// within the last 180 s, inclusive (a user seen exactly 180 000 ms ago still counts).
public struct StatusReader: Tenten_Interview_StatusReader.SimpleServiceProtocol {
  public static let serviceName = "tenten.interview.StatusReader"

  private let store: any PresenceStore
  private let clock: MillisClock
  private let logger: Logger
  private let tracer: any Tracer

  /// - Parameter tracer: each query is a `status.fetch_online_users` span (its store read,
  ///   unless answered from the cache, is a child).
  public init(
    store: any PresenceStore, clock: @escaping MillisClock = systemMillisClock, logger: Logger,
    tracer: any Tracer = InstrumentationSystem.tracer
  ) {
    self.store = store
    self.clock = clock
    self.logger = logger
    self.tracer = tracer
  }

  /// The count, as the RPC answers it; also used by the demo.
  public func onlineUsers() async throws -> UInt64 {
    try await store.countOnline(sinceMillis: clock() - onlineWindowMillis)
  }

  public func fetchOnlineUsersInLast3Mins(
    request: Tenten_Interview_FetchOnlineUsersInLast3MinsRequest, context: ServerContext
  ) async throws -> Tenten_Interview_FetchOnlineUsersInLast3MinsResponse {
    do {
      let count = try await tracer.withSpan("status.fetch_online_users", ofKind: .server) {
        span in
        let count = try await onlineUsers()
        span.attributes["presence.online_users"] = Int(clamping: count)
        return count
      }
      return .with { $0.onlineUsers = count }
    } catch {
      logger.error("count query failed", metadata: ["error": "\(error)"])
      throw RPCError(code: .unavailable, message: "presence store unavailable")
    }
  }
}
