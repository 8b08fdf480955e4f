import Foundation
import Glibc

/// Everything about one job that changes, as one value: where the job is in its life (an enum,
/// `Lifecycle`), how much output is stored, and who waits for what.
///
/// ```
///            STARTED report               init reaped                cgroup removed
///  starting ───────────────▶ running ───────────────▶ cleaningUp ──────────────────▶ ended
///     │                                                  ▲
///     │ FAILED report                  init reaped       │
///     └──────────────▶ failedToStart ────────────────────┤
///     └──────────────── init reaped without a report ────┘
/// ```
///
/// A stop request (SIGTERM) and a kill (SIGKILL to the whole cgroup) are recorded in every live
/// state, because `shutdown` stops jobs whose start has not returned yet too.
///
/// Transitions are `mutating` methods that return an `Action`: `Job` calls them under its lock
/// and performs the action (resuming continuations, signalling the init, killing the cgroup)
/// after releasing it, so the lock is never held across IO or a resume. The machine itself does
/// no IO, which keeps it testable without root.
struct JobStateMachine {
  typealias StartWaiter = CheckedContinuation<Result<Void, JobError>, Never>
  typealias Waiter = CheckedContinuation<Void, any Error>

  /// How far a stop has gone; it decides between `stopped(SIGTERM)` and `stopped(SIGKILL)`.
  enum Stop: Equatable {
    case none
    /// SIGTERM went to the init, which forwards it to the program.
    case requested
    /// Every process of the job was killed through its cgroup.
    case killed
  }

  /// How the job ended, fixed when its init is reaped.
  struct Outcome {
    /// Whether the program ran; `start` throws the failure.
    var start: Result<Void, JobError>
    var state: JobState
    /// Read just before the cgroup is removed, so that `status` never reads a removed cgroup
    /// as zeros.
    var usage: ResourceUsage
  }

  enum Lifecycle {
    /// Cloned; the init waits for its release, then prepares the namespaces and forks the
    /// program. `start` waits in `waiters` for the init's report.
    case starting(Stop, waiters: [StartWaiter])
    /// The init reported STARTED. `programStatus` is the program's raw wait status once the
    /// init reported EXITED (just before it exits itself).
    case running(Stop, programStatus: Int32?)
    /// The init reported why the program could not run; it exits right after.
    case failedToStart(JobError, Stop)
    /// The init was reaped: the outcome is final, the cgroup is being removed.
    case cleaningUp(Outcome)
    /// The cgroup is gone and every descriptor closed; terminal.
    case ended(Outcome, at: Date)
  }

  /// What the owner must do after a transition, outside the lock.
  enum Action {
    case none
    /// Resume the callers of `startResult()`.
    case resumeStart([StartWaiter], Result<Void, JobError>)
    /// Resume output readers or callers waiting for the end.
    case resume([Waiter])
    /// Send this signal to the init (on the reactor thread, see `Job`).
    case signalInit(Int32)
    /// Kill every process of the job's cgroup, then the init.
    case killAll
  }

  enum WaiterKind { case output, end }

  private(set) var lifecycle: Lifecycle = .starting(.none, waiters: [])
  private(set) var outputBytes: UInt64 = 0
  /// Why output was dropped; the first reason stays.
  private(set) var outputLoss: OutputLoss?
  /// Which of the job's program candidates runs, once the init has reported STARTED.
  private(set) var runningCandidate: Int32?
  private var nextWaiterID: UInt64 = 0
  private var outputWaiters: [UInt64: Waiter] = [:]
  private var endWaiters: [UInt64: Waiter] = [:]

  // MARK: Queries

  /// The job has ended: reaped, cgroup removed, waiters released.
  var hasEnded: Bool {
    if case .ended = lifecycle { return true }
    return false
  }

  /// The init has not been reaped yet, so its pidfd is open and may be signalled.
  var initIsAlive: Bool {
    switch lifecycle {
    case .starting, .running, .failedToStart: return true
    case .cleaningUp, .ended: return false
    }
  }

  /// The state `status` reports: `running` until the job has ended.
  var jobState: JobState {
    if case .ended(let outcome, _) = lifecycle { return outcome.state }
    return .running
  }

  var endedAt: Date? {
    if case .ended(_, let at) = lifecycle { return at }
    return nil
  }

  /// The final usage once the init was reaped; nil while the cgroup has the live numbers.
  var finalUsage: ResourceUsage? {
    switch lifecycle {
    case .cleaningUp(let outcome), .ended(let outcome, _): return outcome.usage
    case .starting, .running, .failedToStart: return nil
    }
  }

  var waiterCount: Int { outputWaiters.count + endWaiters.count }

  // MARK: Start

  /// `start` asks how the start went; it is queued until the init's report (or its death).
  mutating func waitForStart(_ waiter: StartWaiter) -> Action {
    switch lifecycle {
    case .starting(let stop, var waiters):
      waiters.append(waiter)
      lifecycle = .starting(stop, waiters: waiters)
      return .none
    case .running:
      return .resumeStart([waiter], .success(()))
    case .failedToStart(let error, _):
      return .resumeStart([waiter], .failure(error))
    case .cleaningUp(let outcome), .ended(let outcome, _):
      return .resumeStart([waiter], outcome.start)
    }
  }

  /// The init reported STARTED: the program runs, found at this index of the job's candidates.
  mutating func started(candidate: Int32) -> Action {
    guard case .starting(let stop, let waiters) = lifecycle else { return .none }
    runningCandidate = candidate
    lifecycle = .running(stop, programStatus: nil)
    return .resumeStart(waiters, .success(()))
  }

  /// The init reported that a setup step failed.
  mutating func failedToStart(_ error: JobError) -> Action {
    guard case .starting(let stop, let waiters) = lifecycle else { return .none }
    lifecycle = .failedToStart(error, stop)
    return .resumeStart(waiters, .failure(error))
  }

  /// The init reported the program's wait status (EXITED).
  mutating func programExited(status: Int32) -> Action {
    if case .running(let stop, _) = lifecycle {
      lifecycle = .running(stop, programStatus: status)
    }
    return .none
  }

  // MARK: Stop

  /// A stop was requested. Signals the init while it lives; returns `.none` once it was
  /// reaped (the caller then only waits for, or reads, the end).
  mutating func requestStop() -> Action {
    switch lifecycle {
    case .starting(let stop, let waiters):
      lifecycle = .starting(stop == .none ? .requested : stop, waiters: waiters)
    case .running(let stop, let status):
      lifecycle = .running(stop == .none ? .requested : stop, programStatus: status)
    case .failedToStart(let error, let stop):
      lifecycle = .failedToStart(error, stop == .none ? .requested : stop)
    case .cleaningUp, .ended:
      return .none
    }
    return .signalInit(SIGTERM)
  }

  /// The grace period is over (or shutdown cannot wait): kill everything, once.
  mutating func kill() -> Action {
    switch lifecycle {
    case .starting(let stop, let waiters):
      guard stop != .killed else { return .none }
      lifecycle = .starting(.killed, waiters: waiters)
    case .running(let stop, let status):
      guard stop != .killed else { return .none }
      lifecycle = .running(.killed, programStatus: status)
    case .failedToStart(let error, let stop):
      guard stop != .killed else { return .none }
      lifecycle = .failedToStart(error, .killed)
    case .cleaningUp, .ended:
      return .none
    }
    return .killAll
  }

  // MARK: End

  /// The init was reaped with `initStatus`; `usage` and `oomKills` were read from the cgroup,
  /// which is removed next. Fixes the outcome.
  mutating func reaped(initStatus: Int32, usage: ResourceUsage, oomKills: UInt64) -> Action {
    let stop: Stop
    let start: Result<Void, JobError>
    var program = initStatus
    var pendingStart: [StartWaiter] = []
    switch lifecycle {
    case .starting(let s, let waiters):
      stop = s
      pendingStart = waiters
      start = .failure(
        JobError(
          .failedToStart,
          "the job's init exited during setup (\(Self.describe(waitStatus: initStatus)))"))
    case .running(let s, let status):
      stop = s
      start = .success(())
      program = status ?? initStatus
    case .failedToStart(let error, let s):
      stop = s
      start = .failure(error)
    case .cleaningUp, .ended:
      return .none
    }
    lifecycle = .cleaningUp(
      Outcome(
        start: start,
        state: Self.finalState(
          program: program, stopRequested: stop != .none, killed: stop == .killed,
          oomKills: oomKills),
        usage: usage))
    return pendingStart.isEmpty ? .none : .resumeStart(pendingStart, start)
  }

  /// The cgroup was removed and the descriptors closed: the job has ended. Releases every
  /// reader and every caller waiting for the end.
  mutating func cleanedUp(at date: Date) -> Action {
    guard case .cleaningUp(let outcome) = lifecycle else { return .none }
    lifecycle = .ended(outcome, at: date)
    defer {
      outputWaiters = [:]
      endWaiters = [:]
    }
    return .resume(Array(outputWaiters.values) + Array(endWaiters.values))
  }

  // MARK: Output and waiters

  /// The reactor stored `stored` more bytes, and dropped the rest of what it read for `loss`.
  mutating func outputStored(_ stored: UInt64, loss: OutputLoss?) -> Action {
    if outputLoss == nil { outputLoss = loss }
    // Past the cap nothing is stored: waking the readers would only make them wait again.
    guard stored > 0 else { return .none }
    outputBytes += stored
    defer { outputWaiters = [:] }
    return .resume(Array(outputWaiters.values))
  }

  /// A fresh ID for `addWaiter`, so that cancellation can find the waiter again.
  mutating func makeWaiterID() -> UInt64 {
    nextWaiterID += 1
    return nextWaiterID
  }

  /// Queues `waiter` until more than `offset` bytes are stored (`.output`) or until the end;
  /// resumes it at once if that is already so.
  mutating func addWaiter(
    _ waiter: Waiter, id: UInt64, kind: WaiterKind, beyond offset: UInt64 = 0
  ) -> Action {
    switch kind {
    case .output:
      if outputBytes > offset || hasEnded { return .resume([waiter]) }
      outputWaiters[id] = waiter
    case .end:
      if hasEnded { return .resume([waiter]) }
      endWaiters[id] = waiter
    }
    return .none
  }

  /// A waiting task was cancelled: its continuation, if still queued, for the owner to resume
  /// with `CancellationError`.
  mutating func removeWaiter(id: UInt64, kind: WaiterKind) -> Waiter? {
    switch kind {
    case .output: return outputWaiters.removeValue(forKey: id)
    case .end: return endWaiters.removeValue(forKey: id)
    }
  }

  // MARK: Pure helpers

  static func finalState(program: Int32, stopRequested: Bool, killed: Bool, oomKills: UInt64)
    -> JobState
  {
    if stopRequested { return .stopped(signal: killed ? SIGKILL : SIGTERM) }
    if oomKills > 0 { return .oomKilled }
    let signal = program & 0x7f
    if signal == 0 { return .exited(code: (program >> 8) & 0xff) }
    return .signaled(signal: signal)
  }

  static func describe(waitStatus: Int32) -> String {
    let signal = waitStatus & 0x7f
    return signal == 0 ? "exit code \((waitStatus >> 8) & 0xff)" : "signal \(signal)"
  }
}
