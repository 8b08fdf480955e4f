import Testing

@testable import CounterGateway

/// The ping schedule, checked on times the test chooses: no wall-clock timing involved, so it
/// holds on a loaded machine. The end-to-end tests only check that pings arrive.
@Suite struct PingSchedulerTests {
  static let t0 = ContinuousClock.now

  /// The instant of tick `tick` on the scheduler's 10 ms wheel.
  static func at(_ tick: Int64) -> ContinuousClock.Instant { t0 + PingScheduler.tick * tick }

  @Test func eachSessionIsPingedOncePerSecondOnItsSlot() throws {
    let recorder = RecordingSink()
    let scheduler = PingScheduler(maxSessions: 10, pongTimeout: .seconds(5))
    let session = try scheduler.add(userID: "cadence", now: Self.at(0), sink: recorder.sink).get()
    var pingedAt: [Int64] = []
    for tick in Int64(0)..<1_000 {
      if tick % 50 == 0 { session.heard(at: Self.at(tick)) }  // an attentive client
      if scheduler.visit(ticks: tick...tick, now: Self.at(tick)).sent == 1 {
        pingedAt.append(tick)
      }
    }
    let slot = Int64(PingScheduler.slot(of: "cadence"))
    // Ten seconds of schedule: ten pings, exactly 100 ticks (1 s) apart, on the session's slot.
    #expect(pingedAt == (0..<10).map { slot + 100 * $0 })
    #expect(scheduler.count == 1)
    // Delivered on the stream's event loop, in the visits' batches.
    #expect(recorder.pings == 0)
    recorder.loop.run()
    #expect(recorder.pings == 10)
  }

  @Test func sessionsAreSpreadOverTheSecond() {
    let recorder = RecordingSink()
    let scheduler = PingScheduler(maxSessions: 1_000, pongTimeout: .seconds(5))
    for index in 0..<1_000 {
      _ = scheduler.add(userID: "spread-\(index)", now: Self.at(0), sink: recorder.sink)
    }
    var perTick: [Int] = []
    for tick in Int64(0)..<100 {
      perTick.append(scheduler.visit(ticks: tick...tick, now: Self.at(tick)).sent)
    }
    // Every session once per revolution, and no tick carries a large share of them.
    #expect(perTick.reduce(0, +) == 1_000)
    recorder.loop.run()
    #expect(recorder.pings == 1_000)
    #expect(perTick.max()! < 40, "the busiest 10 ms tick pinged \(perTick.max()!) of 1,000")
  }

  @Test func aStallLongerThanASecondVisitsEachSlotOnce() {
    #expect(PingScheduler.ticksToVisit(fired: 9, due: 9) == nil)
    #expect(PingScheduler.ticksToVisit(fired: 9, due: 12) == 10...12)
    // 3.5 s late: the last 100 ticks, i.e. each slot once, not 350 visits.
    #expect(PingScheduler.ticksToVisit(fired: 0, due: 350) == 251...350)
    let recorder = RecordingSink()
    let scheduler = PingScheduler(maxSessions: 10, pongTimeout: .seconds(5))
    _ = scheduler.add(userID: "stalled", now: Self.at(0), sink: recorder.sink)
    let ticks = PingScheduler.ticksToVisit(fired: 0, due: 350)!
    #expect(scheduler.visit(ticks: ticks, now: Self.at(350)).sent == 1)
  }

  @Test func silentSessionsExpireAtTheirFirstVisitAfterTheTimeout() throws {
    let recorder = RecordingSink()
    let scheduler = PingScheduler(maxSessions: 10, pongTimeout: .seconds(1))
    let silent = try scheduler.add(userID: "silent", now: Self.at(0), sink: recorder.sink).get()
    let slot = Int64(PingScheduler.slot(of: "silent"))
    // At its slot within the timeout: pinged, still open.
    #expect(scheduler.visit(ticks: slot...slot, now: Self.at(slot)).sent == 1)
    #expect(silent.closeReason == nil)
    // One revolution later, 1 s + its slot offset after the last pong: past the timeout only
    // if the slot offset is more than zero; two revolutions later certainly.
    let later = slot + 200
    let result = scheduler.visit(ticks: later...later, now: Self.at(later))
    #expect(result.expired == 1 && result.sent == 0)
    #expect(silent.closeReason?.code == .deadlineExceeded)
    // Never early: a session heard just now is pinged, not expired.
    let talker = try scheduler.add(userID: "talker", now: Self.at(later), sink: recorder.sink).get()
    let talkerSlot = Int64(PingScheduler.slot(of: "talker")) + 300
    talker.heard(at: Self.at(talkerSlot - 1))
    #expect(scheduler.visit(ticks: talkerSlot...talkerSlot, now: Self.at(talkerSlot)).sent >= 1)
    #expect(talker.closeReason == nil)
  }

  /// The gateway's own stall (the loop woke late) is not silence of its clients: their pongs
  /// may sit unread meanwhile. A session last heard 7 s ago, at a visit 2 s after a stall
  /// ended, is pinged, not ended; once it has been silent a full timeout past the stall, it is.
  @Test func silenceIsCountedFromTheEndOfTheGatewaysLastStall() throws {
    #expect(PingScheduler.stall(wokeAt: Self.at(100), dueAt: Self.at(99)) == nil)
    #expect(
      PingScheduler.stall(wokeAt: Self.at(800), dueAt: Self.at(100)) == PingScheduler.tick * 700)
    let recorder = RecordingSink()
    let scheduler = PingScheduler(maxSessions: 10, pongTimeout: .seconds(5))
    let session = try scheduler.add(userID: "waiting", now: Self.at(0), sink: recorder.sink).get()
    let slot = Int64(PingScheduler.slot(of: "waiting"))
    let stallEnded = Self.at(500)
    let soon = slot + 700  // 7 s and the slot's offset after the last pong, 2 s after the stall
    #expect(
      scheduler.visit(ticks: soon...soon, now: Self.at(soon), listeningSince: stallEnded).sent
        == 1)
    #expect(session.closeReason == nil)
    // Without the stall, that visit would have ended it.
    let other = try scheduler.add(userID: "waiting", now: Self.at(0), sink: recorder.sink).get()
    #expect(other.tick(now: Self.at(soon), timeout: .seconds(5)) == .expired)
    // Silent for more than the timeout after the stall: ended.
    let late = slot + 1_100
    #expect(
      scheduler.visit(ticks: late...late, now: Self.at(late), listeningSince: stallEnded).expired
        >= 1)
    #expect(session.closeReason?.code == .deadlineExceeded)
  }
}
