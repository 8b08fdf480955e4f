import GRPCCore
import NIOCore
import Synchronization

/// Where the pings and the end of a stream served on an event loop go (``ConnectStreamHandler``,
/// no task per stream): the scheduler calls ``ping`` on ``eventLoop`` for every due ping, many
/// streams in one event-loop task, and ``end`` once when the stream ends for any reason.
struct PingSink: Sendable {
  let eventLoop: any EventLoop
  /// Writes one ping; runs on ``eventLoop``.
  let ping: @Sendable () -> Void
  /// The session ended (its reason is ``ClientSession/endError``); runs on ``eventLoop``.
  let end: @Sendable () -> Void
}

/// One open `Connect` stream, as the ping scheduler sees it: who, which slot pings it, where its
/// pings go (``sink``), when it was last heard and why it ended.
///
/// A client that stops reading is caught below the session: its ``ConnectStreamHandler``
/// resets a stream with more than `GatewayServer.Configuration.maxUnsentPings` pings written
/// but not sent. The session catches the silent one (``tick(now:timeout:listeningSince:)``)
/// and the flooding one (``heard(at:)``).
final class ClientSession: Sendable {
  let id: UInt64
  let userID: String
  /// Which of the scheduler's slots pings this session.
  let slot: Int
  /// Where the scheduler delivers the session's pings and its end, on the stream's event loop.
  let sink: PingSink
  private let state: Mutex<State>

  private struct State {
    var lastHeard: ContinuousClock.Instant
    var closeReason: RPCError?
    /// Set when the stream's handler ended it first (the client left, the transport failed);
    /// its error, if it had one.
    var taskEnding: TaskEnding?
    var pongs: PongBudget
    var presence = PresenceRefresh()
  }

  init(id: UInt64, userID: String, slot: Int, now: ContinuousClock.Instant, sink: PingSink) {
    self.id = id
    self.userID = userID
    self.slot = slot
    self.sink = sink
    state = Mutex(State(lastHeard: now, pongs: PongBudget(now: now)))
  }

  /// How the stream's handler ended it.
  struct TaskEnding {
    /// `nil` when the client half-closed (it is leaving): the RPC ends with OK.
    var error: (any Error)?
  }

  /// Why the gateway ended the stream, once it did.
  var closeReason: RPCError? { state.withLock { $0.closeReason } }

  /// What the RPC ends with, once the stream ended: the gateway's reason, else the error the
  /// handler ended it with; `nil` for a client that left (OK).
  var endError: (any Error)? {
    state.withLock { $0.closeReason ?? $0.taskEnding?.error }
  }

  /// What one pong changed (``heard(at:online:refresh:)``).
  struct Heard: Equatable {
    /// `false` when the client sends pongs faster than ``PongBudget`` allows: the stream is
    /// then ended.
    var withinBudget: Bool
    /// The instant to report the user online at now, if any (``PresenceRefresh``).
    var report: ContinuousClock.Instant?
  }

  /// Any pong proves the client alive, whatever its status; an `online` one (EVEN/ODD) also
  /// counts for presence, reported at most once every `refresh` (``PresenceRefresh``).
  @discardableResult
  func heard(
    at now: ContinuousClock.Instant, online: Bool = false, refresh: Duration = .zero
  ) -> Heard {
    let heard = state.withLock { state in
      state.lastHeard = now
      guard state.pongs.spend(at: now) else { return Heard(withinBudget: false) }
      return Heard(
        withinBudget: true,
        report: online ? state.presence.online(at: now, interval: refresh) : nil)
    }
    if !heard.withinBudget {
      close(
        RPCError(
          code: .resourceExhausted,
          message:
            "more than \(Int(PongBudget.perSecond)) pongs a second: answer each ping once"))
    }
    return heard
  }

  /// The stream ended: the instant of its last online pong not yet reported, if any (once).
  func unreportedPresence() -> ContinuousClock.Instant? {
    state.withLock { $0.presence.ended() }
  }

  enum TickResult { case pinged, expired, closed }

  /// Decides the session's ping: due (the scheduler delivers it to ``sink``, grouped per event
  /// loop), or the end of a stream silent for longer than `timeout`, counted from
  /// `listeningSince` at the earliest: the end of the gateway's last stall, during which the
  /// client's pongs could not be read.
  func tick(
    now: ContinuousClock.Instant, timeout: Duration,
    listeningSince: ContinuousClock.Instant? = nil
  ) -> TickResult {
    let expired = state.withLock { state -> Bool? in
      guard state.closeReason == nil, state.taskEnding == nil else { return nil }
      guard now - max(state.lastHeard, listeningSince ?? state.lastHeard) > timeout else {
        return false
      }
      state.closeReason = RPCError(
        code: .deadlineExceeded, message: "no pong for more than \(timeout): disconnecting")
      return true
    }
    switch expired {
    case false?:
      return .pinged
    case true?:
      ended()
      return .expired
    case nil:
      return .closed
    }
  }

  /// Ends the stream with `reason` (the first ending wins).
  func close(_ reason: RPCError) {
    end { $0.closeReason = reason }
  }

  /// The stream's handler ended it: the client half-closed (`error` nil), or the stream or
  /// its connection failed. The first ending wins.
  func taskEnded(_ error: (any Error)?) {
    end { $0.taskEnding = TaskEnding(error: error) }
  }

  private func end(_ record: (inout State) -> Void) {
    let first = state.withLock { state in
      guard state.closeReason == nil, state.taskEnding == nil else { return false }
      record(&state)
      return true
    }
    if first { ended() }
  }

  private func ended() {
    // Always a later event-loop task, also on the loop itself: the handler may be in the
    // middle of a read that decided the end.
    let sink = self.sink
    sink.eventLoop.execute { sink.end() }
  }
}
