import GRPCCore
import Logging
import Metrics
import NIOCore
import Synchronization

/// Pings every registered session once a second, from one timer per event loop.
///
/// A timer wheel of 100 slots of 10 ms: each session lives in the slot its id hashes to, and
/// each tick visits one slot. N clients are thus spread evenly over the second instead of all
/// firing on one tick. The sessions are kept per event loop (the loop of their stream), and
/// while ``run()`` runs each loop has one timer of its own (``LoopTimer``) that visits only its
/// loop's sessions and writes their pings there and then: no task, thread hop or queued
/// closure per ping, and one flush per connection per tick (``FlushBatch``). The same visit
/// checks the pong timeout, so silent clients are found within a second of their deadline.
///
/// **The gateway's own stalls do not count against its clients.** When a loop's timer wakes
/// more than ``stallThreshold`` after it was due (the process was starved of CPU or stopped,
/// or the loop was busy), or an event loop carrying client connections ran its tasks that
/// late (``noteStall(of:in:endingAt:)``, from the listener's `EventLoopStallWatch`), the pongs
/// of that time may still sit unread in socket buffers and task queues: silence is then
/// measured from the end of the stall, not from the last pong handled. Without this, a
/// gateway that stalls for longer than the pong timeout ends every stream at its next tick,
/// and all its clients reconnect at once into an overloaded process (etcd extends its leases
/// after a leader change for the same reason).
/// A silent client is still ended one pong timeout after the last stall.
final class PingScheduler: Sendable {
  static let slotCount = 100
  static let tick = Duration.milliseconds(10)
  /// How late the timer loop may wake before it counts as a stall: 50 ticks, far beyond a
  /// healthy loop's lateness (well under a tick) and far below the pong timeout.
  static let stallThreshold = Duration.milliseconds(500)

  /// The sessions of one event loop, by slot.
  private struct LoopSessions {
    let eventLoop: any EventLoop
    var slots = [[UInt64: ClientSession]](repeating: [:], count: PingScheduler.slotCount)
  }

  private struct State {
    /// Keyed by the `ObjectIdentifier` of the sessions' event loop.
    var loops: [ObjectIdentifier: LoopSessions] = [:]
    /// While ``run()`` runs: the instant tick 0 was due, and each loop's timer.
    var timersStart: ContinuousClock.Instant?
    var timers: [ObjectIdentifier: NIOLoopBound<LoopTimer>] = [:]
    var count = 0
    var nextID: UInt64 = 0
    var draining = false

    /// Why one more session would be refused now, if it would.
    func refusal(limit: Int) -> AdmissionError? {
      if draining { return .draining }
      if count >= limit { return .full(limit: limit) }
      return nil
    }
  }

  enum AdmissionError: Error {
    case full(limit: Int)
    case draining

    var rpcError: RPCError {
      switch self {
      case .full(let limit):
        RPCError(code: .resourceExhausted, message: "gateway is at its limit of \(limit) clients")
      case .draining:
        RPCError(code: .unavailable, message: "gateway draining")
      }
    }
  }

  private let state = Mutex(State())
  private let flushBatches = PerEventLoop { _ in FlushBatch() }
  private let maxSessions: Int
  private let pongTimeout: Duration
  private let connected = Gauge(label: "gateway_connected_clients")
  private let pingsSent = Counter(label: "gateway_pings_sent_total")
  private let timeouts = Counter(label: "gateway_pong_timeouts_total")
  private let stalls = Counter(label: "gateway_stalls_total")
  /// How late the timer loop woke for its tick (the whole second's schedule rests on it).
  private let timerLateness = Timer(label: "gateway_ping_timer_lateness_seconds")
  /// From the timer's visit to the end of a loop's batch of pings: the event loop's queue
  /// and the batch's own writes. With ``timerLateness``, when a tick's last ping leaves.
  private let batchDelay = Timer(label: "gateway_ping_batch_delay_seconds")
  private let logger: Logger
  /// The end of the gateway's last stall: silence before it is not held against clients.
  private let lastStallEnded = Mutex<ContinuousClock.Instant?>(nil)

  init(maxSessions: Int, pongTimeout: Duration, logger: Logger = Logger(label: "gateway")) {
    self.maxSessions = maxSessions
    self.pongTimeout = pongTimeout
    self.logger = logger
  }

  var count: Int { state.withLock { $0.count } }

  /// Why a new session would be refused now, if it would.
  func admissionError() -> RPCError? {
    state.withLock { $0.refusal(limit: maxSessions) }?.rpcError
  }

  /// The slot that pings `userID`'s sessions.
  static func slot(of userID: String) -> Int {
    Int(stableHash(userID) % UInt64(slotCount))
  }

  /// A stable hash (FNV-1a), so that a user lands in the same ping slot on every gateway and
  /// every run: `hashValue` is seeded per process.
  static func stableHash(_ userID: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in userID.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x100_0000_01b3
    }
    return hash
  }

  /// Registers a session for `userID`, or refuses when full or draining.
  ///
  /// - Parameters:
  ///   - slot: The slot that pings it; by default the one `userID` hashes to.
  ///   - sink: Where its pings and its end go.
  func add(
    userID: String, slot: Int? = nil, now: ContinuousClock.Instant = .now, sink: PingSink
  ) -> Result<ClientSession, AdmissionError> {
    let slot = slot ?? Self.slot(of: userID)
    let key = ObjectIdentifier(sink.eventLoop)
    let admitted = state.withLock {
      state -> Result<(ClientSession, startTimer: Bool), AdmissionError> in
      if let refusal = state.refusal(limit: maxSessions) { return .failure(refusal) }
      let session = ClientSession(
        id: state.nextID, userID: userID, slot: slot, now: now, sink: sink)
      state.nextID += 1
      let newLoop = state.loops[key] == nil
      state.loops[key, default: LoopSessions(eventLoop: sink.eventLoop)].slots[slot][session.id] =
        session
      state.count += 1
      // Recorded under the lock: outside it, concurrent updates could land out of order and
      // leave the gauge stale.
      connected.record(state.count)
      return .success((session, newLoop && state.timersStart != nil))
    }
    return admitted.map { session, startTimer in
      if startTimer { self.startTimer(on: sink.eventLoop) }
      return session
    }
  }

  func remove(_ session: ClientSession) {
    let key = ObjectIdentifier(session.sink.eventLoop)
    state.withLock { state in
      guard state.loops[key]?.slots[session.slot].removeValue(forKey: session.id) != nil else {
        return
      }
      state.count -= 1
      connected.record(state.count)
    }
  }

  /// Refuses new sessions from now on and ends every open one with `reason`.
  func drain(_ reason: RPCError) {
    let sessions = state.withLock { state in
      state.draining = true
      return state.loops.values.flatMap { $0.slots.flatMap(\.values) }
    }
    for session in sessions { session.close(reason) }
  }

  /// Runs a timer on each event loop that carries sessions (loops that get their first
  /// session later get theirs then); returns when cancelled, with every timer stopped.
  func run() async {
    let loops = state.withLock { state in
      state.timersStart = .now
      return state.loops.values.map(\.eventLoop)
    }
    for loop in loops { startTimer(on: loop) }
    while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    let timers = state.withLock { state in
      state.timersStart = nil
      defer { state.timers = [:] }
      return Array(state.timers.values)
    }
    for timer in timers { timer.eventLoop.execute { timer.value.stop() } }
  }

  /// Starts `loop`'s timer, on the loop, unless it has one or ``run()`` has ended.
  private func startTimer(on loop: any EventLoop) {
    loop.execute {
      let key = ObjectIdentifier(loop)
      let timer = NIOLoopBound(LoopTimer(scheduler: self, eventLoop: loop), eventLoop: loop)
      let start = self.state.withLock { state -> ContinuousClock.Instant? in
        guard let start = state.timersStart, state.timers[key] == nil else { return nil }
        state.timers[key] = timer
        return start
      }
      if let start { timer.value.start(at: start) }
    }
  }

  /// `loop`'s timer woke at `now` for the tick after `fired` (ticks counted from `start`):
  /// visits what is due and returns the last tick visited.
  fileprivate func timerFired(
    on loop: any EventLoop, start: ContinuousClock.Instant, fired: Int64,
    now: ContinuousClock.Instant
  ) -> Int64 {
    let dueAt = start + Self.tick * (fired + 1)
    timerLateness.recordInterval(since: dueAt, now: now)
    if let stall = Self.stall(wokeAt: now, dueAt: dueAt) {
      noteStall(of: stall, in: "the ping timer", endingAt: now)
    }
    let due = Int64((now - start) / Self.tick)
    guard let ticks = Self.ticksToVisit(fired: fired, due: due) else { return fired }
    visit(ownLoop: loop, ticks: ticks, now: now)
    return due
  }

  /// The flushes `loop` holds back while it writes a batch of pings (``FlushBatch``), for the
  /// connections it carries. On `loop`.
  func flushBatch(on loop: any EventLoop) -> FlushBatch {
    flushBatches.value(on: loop)
  }

  /// Records a stall of the gateway (its timer loop, or an event loop carrying its
  /// connections, ran `length` late) that ended at `end`: every pong deadline restarts there.
  /// A stall seen twice (by a loop's timer and by the listener's watch, or by several loops
  /// of one stopped process) is counted and logged once.
  func noteStall(of length: Duration, in part: String, endingAt end: ContinuousClock.Instant) {
    let seen = lastStallEnded.withLock { last -> Bool in
      defer { last = max(last ?? end, end) }
      guard let last else { return false }
      return end - last < Self.stallThreshold && last - end < Self.stallThreshold
    }
    guard !seen else { return }
    stalls.increment()
    logger.warning(
      "gateway stalled: pong deadlines restart now",
      metadata: [
        "gateway.stall_ms": "\(length / .milliseconds(1))", "gateway.stalled": "\(part)",
        "gateway.clients": "\(count)",
      ])
  }

  /// How long the loop stalled when it woke at `now` for a tick due at `dueAt`, if it woke
  /// more than ``stallThreshold`` late.
  static func stall(wokeAt now: ContinuousClock.Instant, dueAt: ContinuousClock.Instant)
    -> Duration?
  {
    let late = now - dueAt
    return late > stallThreshold ? late : nil
  }

  /// The ticks to visit when tick `due` is due and `fired` was the last one visited: every
  /// tick in between, but after a stall longer than a second each slot once rather than
  /// replaying (a client is never pinged twice in one visit). Nil when nothing is due.
  static func ticksToVisit(fired: Int64, due: Int64) -> ClosedRange<Int64>? {
    let first = max(fired + 1, due - Int64(slotCount) + 1)
    return first <= due ? first...due : nil
  }

  /// Visits the slots of `ticks` at `now`, for every event loop: pings each session there, or
  /// ends those silent for longer than the pong timeout since they were last heard or since
  /// `listeningSince` (the end of the gateway's last stall), whichever is later. Each loop's
  /// pings are written by one task on that loop, in one ``FlushBatch``.
  ///
  /// Tests call it with times of their own, so the schedule is checked without depending on
  /// wall-clock timing; the loops' timers visit their own loop (``visit(ownLoop:ticks:now:)``).
  @discardableResult
  func visit(
    ticks: ClosedRange<Int64>, now: ContinuousClock.Instant,
    listeningSince: ContinuousClock.Instant? = nil
  ) -> (sent: Int, expired: Int) {
    var batches: [(loop: any EventLoop, sinks: [PingSink])] = []
    let counts = decide(ticks: ticks, now: now, listeningSince: listeningSince, on: nil) {
      let sink = $0.sink
      if let index = batches.firstIndex(where: { $0.loop === sink.eventLoop }) {
        batches[index].sinks.append(sink)
      } else {
        batches.append((sink.eventLoop, [sink]))
      }
    }
    for (loop, sinks) in batches {
      loop.execute {
        self.flushBatch(on: loop).run {
          for sink in sinks { sink.ping() }
        }
        self.batchDelay.recordInterval(since: now, now: .now)
      }
    }
    return counts
  }

  /// A loop's timer's visit of its own loop's sessions, on that loop: as
  /// ``visit(ticks:now:listeningSince:)``, each ping written as it is decided, all of them in
  /// one ``FlushBatch``.
  private func visit(
    ownLoop loop: any EventLoop, ticks: ClosedRange<Int64>, now: ContinuousClock.Instant
  ) {
    let listeningSince = lastStallEnded.withLock { $0 }
    flushBatch(on: loop).run {
      decide(ticks: ticks, now: now, listeningSince: listeningSince, on: ObjectIdentifier(loop)) {
        $0.sink.ping()
      }
    }
    batchDelay.recordInterval(since: now, now: .now)
  }

  /// Decides each session in the slots of `ticks` (of the loop `loop` names, or of every
  /// loop): `ping` for those due a ping, the end for the silent ones. Counts both.
  @discardableResult
  private func decide(
    ticks: ClosedRange<Int64>, now: ContinuousClock.Instant,
    listeningSince: ContinuousClock.Instant?, on loop: ObjectIdentifier?,
    ping: (ClientSession) -> Void
  ) -> (sent: Int, expired: Int) {
    var sent = 0
    var expired = 0
    for tick in ticks {
      let slot = Int(tick % Int64(Self.slotCount))
      let sessions = state.withLock { state in
        if let loop { return state.loops[loop].map { Array($0.slots[slot].values) } ?? [] }
        return state.loops.values.flatMap { $0.slots[slot].values }
      }
      for session in sessions {
        switch session.tick(now: now, timeout: pongTimeout, listeningSince: listeningSince) {
        case .pinged:
          sent += 1
          ping(session)
        case .expired: expired += 1
        case .closed: break
        }
      }
    }
    if sent > 0 { pingsSent.increment(by: sent) }
    if expired > 0 { timeouts.increment(by: expired) }
    return (sent, expired)
  }
}

/// One event loop's ping timer: wakes on each 10 ms tick of the scheduler's wheel (every tick
/// counted from the same start, so a late wake-up visits what it missed and the next one is
/// not pushed back), and has the scheduler visit the loop's sessions. On its loop only.
final class LoopTimer {
  private let scheduler: PingScheduler
  private let eventLoop: any EventLoop
  private var start = ContinuousClock.Instant.now
  private var fired: Int64 = -1
  private var scheduled: Scheduled<Void>?
  private var stopped = false

  fileprivate init(scheduler: PingScheduler, eventLoop: any EventLoop) {
    self.scheduler = scheduler
    self.eventLoop = eventLoop
  }

  /// Ticks from `start` on (tick 0 due then).
  fileprivate func start(at start: ContinuousClock.Instant) {
    self.start = start
    self.fired = Int64((ContinuousClock.now - start) / PingScheduler.tick) - 1
    arm()
  }

  fileprivate func stop() {
    stopped = true
    scheduled?.cancel()
    scheduled = nil
  }

  private func arm() {
    guard !stopped else { return }
    let due = start + PingScheduler.tick * (fired + 1)
    let delay = max(due - ContinuousClock.now, .zero)
    scheduled = eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) { self.fire() }
  }

  private func fire() {
    guard !stopped else { return }
    fired = scheduler.timerFired(on: eventLoop, start: start, fired: fired, now: .now)
    arm()
  }
}

extension Timer {
  /// Records the time from `start` to `now` (nothing when `now` is earlier).
  fileprivate func recordInterval(
    since start: ContinuousClock.Instant, now: ContinuousClock.Instant
  ) {
    let elapsed = now - start
    guard elapsed > .zero else { return }
    recordNanoseconds(TimeAmount(elapsed).nanoseconds)
  }
}
