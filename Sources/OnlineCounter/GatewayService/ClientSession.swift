import GRPCCore
import Synchronization

/// One open `Connect` stream, as the ping scheduler sees it.
///
/// The scheduler pushes ping tokens into a one-slot outbox: if the stream's writer is slow,
/// pings coalesce instead of queueing, so a stuck client costs constant memory.
final class ClientSession: Sendable {
  let id: UInt64
  let userID: String
  /// Which of the scheduler's slots pings this session.
  let slot: Int
  let pings: AsyncStream<Void>
  private let outbox: AsyncStream<Void>.Continuation
  private let state: Mutex<State>

  private struct State {
    var lastHeard: ContinuousClock.Instant
    var closeReason: RPCError?
  }

  init(id: UInt64, userID: String, slot: Int, now: ContinuousClock.Instant) {
    self.id = id
    self.userID = userID
    self.slot = slot
    (pings, outbox) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    state = Mutex(State(lastHeard: now))
  }

  /// Why the gateway ended the stream, once it did.
  var closeReason: RPCError? { state.withLock { $0.closeReason } }

  /// Any pong proves the client alive, whatever its status.
  func heard(at now: ContinuousClock.Instant) {
    state.withLock { $0.lastHeard = now }
  }

  enum TickResult { case pinged, expired, closed }

  /// Pings the client, or ends the stream when it has been silent longer than `timeout`.
  func tick(now: ContinuousClock.Instant, timeout: Duration) -> TickResult {
    let expired = state.withLock { state -> Bool? in
      guard state.closeReason == nil else { return nil }
      guard now - state.lastHeard > timeout else { return false }
      state.closeReason = RPCError(
        code: .deadlineExceeded, message: "no pong for more than \(timeout): disconnecting")
      return true
    }
    switch expired {
    case false?:
      outbox.yield()
      return .pinged
    case true?:
      outbox.finish()
      return .expired
    case nil:
      return .closed
    }
  }

  /// Ends the stream with `reason` (first reason wins).
  func close(_ reason: RPCError) {
    let first = state.withLock { state in
      guard state.closeReason == nil else { return false }
      state.closeReason = reason
      return true
    }
    if first { outbox.finish() }
  }

  /// A ping outside the schedule: the first one, right after the stream opens.
  func pingNow() { outbox.yield() }
}
