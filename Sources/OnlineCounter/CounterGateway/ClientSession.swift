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

/// One open `Connect` stream, as the ping scheduler sees it.
///
/// The scheduler pushes ping tokens into a one-slot outbox: if the stream's writer is slow,
/// pings coalesce instead of queueing. Below the outbox, a gRPC write returns once the HTTP/2
/// layer has buffered the frame; ServiceKit's `RequestMessageGuard` resets a stream with more
/// than `GatewayServer.Configuration.maxUnsentPings` pings written but not sent (a client that
/// stopped reading). A write that does not return (a connection that does not drain at all)
/// and stays blocked longer than the pong timeout ends the stream (``tick(now:timeout:)``).
final class ClientSession: Sendable {
  let id: UInt64
  let userID: String
  /// Which of the scheduler's slots pings this session.
  let slot: Int
  let pings: AsyncStream<Void>
  /// Set for a stream served on an event loop: the scheduler delivers its pings there, and
  /// ``pings`` and ``closed`` are unused.
  let sink: PingSink?
  private let outbox: AsyncStream<Void>.Continuation
  private let state: Mutex<State>

  private let closedSignal: AsyncStream<Void>.Continuation
  /// Finishes when the stream ends: by the gateway (``close(_:)``, a timeout) or by one of
  /// its own tasks (``taskEnded(_:)``: the client left, the transport failed).
  let closed: AsyncStream<Void>

  private struct State {
    var lastHeard: ContinuousClock.Instant
    var closeReason: RPCError?
    /// Set when one of the stream's tasks ended it first; its error, if it had one.
    var taskEnding: TaskEnding?
    var pongs: PongBudget
    /// When the write in progress started; `nil` between writes.
    var writeStarted: ContinuousClock.Instant?
  }

  init(
    id: UInt64, userID: String, slot: Int, now: ContinuousClock.Instant, sink: PingSink? = nil
  ) {
    self.id = id
    self.userID = userID
    self.slot = slot
    self.sink = sink
    (pings, outbox) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    (closed, closedSignal) = AsyncStream.makeStream(of: Void.self)
    state = Mutex(State(lastHeard: now, pongs: PongBudget(now: now)))
  }

  /// How one of the stream's own tasks ended it.
  struct TaskEnding {
    /// `nil` when the client half-closed (it is leaving): the RPC ends with OK.
    var error: (any Error)?
  }

  /// Why the gateway ended the stream, once it did.
  var closeReason: RPCError? { state.withLock { $0.closeReason } }

  /// What the RPC ends with, once the stream ended: the gateway's reason, else the error of
  /// the task that ended it; `nil` for a client that left (OK).
  var endError: (any Error)? {
    state.withLock { $0.closeReason ?? $0.taskEnding?.error }
  }

  /// Any pong proves the client alive, whatever its status. `false` when the client sends
  /// pongs faster than ``PongBudget`` allows: the stream is then ended.
  @discardableResult
  func heard(at now: ContinuousClock.Instant) -> Bool {
    let withinBudget = state.withLock { state in
      state.lastHeard = now
      return state.pongs.spend(at: now)
    }
    if !withinBudget {
      close(
        RPCError(
          code: .resourceExhausted,
          message:
            "more than \(Int(PongBudget.perSecond)) pongs a second: answer each ping once"))
    }
    return withinBudget
  }

  /// Brackets each ping write, so that ``tick(now:timeout:)`` can see a write that does not
  /// return: the client stopped reading its stream.
  func writeStarted(at now: ContinuousClock.Instant) {
    state.withLock { $0.writeStarted = now }
  }

  func writeFinished() {
    state.withLock { $0.writeStarted = nil }
  }

  enum TickResult { case pinged, expired, closed }

  /// Pings the client, or ends the stream when it has been silent longer than `timeout`, or
  /// when a ping could not be written for longer than `timeout` (the client does not read).
  /// Both are counted from `listeningSince` at the earliest: the end of the gateway's last
  /// stall, during which the client's pongs could not be read nor its pings written.
  func tick(
    now: ContinuousClock.Instant, timeout: Duration,
    listeningSince: ContinuousClock.Instant? = nil
  ) -> TickResult {
    let expired = state.withLock { state -> Bool? in
      guard state.closeReason == nil, state.taskEnding == nil else { return nil }
      func since(_ instant: ContinuousClock.Instant) -> Duration {
        now - max(instant, listeningSince ?? instant)
      }
      if let started = state.writeStarted, since(started) > timeout {
        state.closeReason = RPCError(
          code: .resourceExhausted,
          message: "the client has not read its pings for more than \(timeout): disconnecting")
        return true
      }
      guard since(state.lastHeard) > timeout else { return false }
      state.closeReason = RPCError(
        code: .deadlineExceeded, message: "no pong for more than \(timeout): disconnecting")
      return true
    }
    switch expired {
    case false?:
      // A sink's pings are delivered by the scheduler, grouped per event loop.
      if sink == nil { outbox.yield() }
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

  /// One of the stream's own tasks ended: the pong reader when the client half-closes
  /// (`error` nil) or its read fails, the ping writer when its write fails. Ends the stream
  /// (the first ending wins), so that the handler stops the other task.
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
    outbox.finish()
    closedSignal.finish()
    // Always a later event-loop task, also on the loop itself: the handler may be in the
    // middle of a read that decided the end.
    if let sink { sink.eventLoop.execute { sink.end() } }
  }

  /// A ping outside the schedule: the first one, right after the stream opens.
  func pingNow() { outbox.yield() }
}
