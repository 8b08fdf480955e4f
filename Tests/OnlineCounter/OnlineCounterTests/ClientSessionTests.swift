import GRPCCore
import NIOEmbedded
import Synchronization
import Testing

@testable import CounterGateway

/// Where a test's sessions deliver their pings and their end: counted on an embedded event
/// loop, run by the test.
final class RecordingSink: Sendable {
  let loop = EmbeddedEventLoop()
  private let counts = Mutex((pings: 0, ends: 0))

  var pings: Int { counts.withLock { $0.pings } }
  var ends: Int { counts.withLock { $0.ends } }

  var sink: PingSink {
    PingSink(
      eventLoop: loop, ping: { self.counts.withLock { $0.pings += 1 } },
      end: { self.counts.withLock { $0.ends += 1 } })
  }
}

/// A session's defences, on instants the test chooses (no wall-clock timing).
@Suite struct ClientSessionTests {
  static let t0 = ContinuousClock.now
  static let timeout = Duration.seconds(5)

  static func session(_ recorder: RecordingSink) -> ClientSession {
    ClientSession(id: 1, userID: "u", slot: 0, now: t0, sink: recorder.sink)
  }

  @Test func aClientAnsweringEachPingIsNeverCut() {
    let recorder = RecordingSink()
    let session = Self.session(recorder)
    for second in 0..<600 {
      let now = Self.t0 + .seconds(second)
      #expect(session.heard(at: now).withinBudget)
      #expect(session.tick(now: now, timeout: Self.timeout) == .pinged)
    }
    recorder.loop.run()
    #expect(session.closeReason == nil)
    #expect(recorder.ends == 0)
  }

  @Test func aPongFloodEndsTheStreamAfterTheBurst() {
    let recorder = RecordingSink()
    let session = Self.session(recorder)
    let answers = (0..<20).map { session.heard(at: Self.t0 + .milliseconds($0)).withinBudget }
    // The burst of 10 is allowed, the 11th pong within the same few milliseconds is not.
    #expect(answers.prefix(10).allSatisfy { $0 })
    #expect(answers[10] == false)
    #expect(session.closeReason?.code == .resourceExhausted)
    // The stream's handler learns the end once, in a later event-loop task.
    #expect(recorder.ends == 0)
    recorder.loop.run()
    #expect(recorder.ends == 1)
    #expect(session.tick(now: Self.t0 + .seconds(1), timeout: Self.timeout) == .closed)
  }

  @Test func aSilentClientIsEndedPastThePongTimeoutOnce() {
    let recorder = RecordingSink()
    let session = Self.session(recorder)
    session.heard(at: Self.t0)
    #expect(session.tick(now: Self.t0 + .seconds(5), timeout: Self.timeout) == .pinged)
    #expect(session.tick(now: Self.t0 + .seconds(6), timeout: Self.timeout) == .expired)
    #expect(session.closeReason?.code == .deadlineExceeded)
    // Ended once: a later close or handler ending changes nothing.
    session.taskEnded(nil)
    session.close(RPCError(code: .unavailable, message: "draining"))
    recorder.loop.run()
    #expect(recorder.ends == 1)
    #expect(session.endError.map { ($0 as? RPCError)?.code } == .deadlineExceeded)
  }

  @Test func aClientThatLeftEndsWithoutAnError() {
    let recorder = RecordingSink()
    let session = Self.session(recorder)
    session.taskEnded(nil)
    recorder.loop.run()
    #expect(recorder.ends == 1)
    #expect(session.endError == nil && session.closeReason == nil)
  }

  // MARK: Presence refresh

  @Test func aConnectedUserIsReportedAtItsFirstOnlinePongThenOncePerRefresh() {
    let session = Self.session(RecordingSink())
    let refresh = Duration.seconds(10)
    var reported: [Duration] = []
    for second in 0..<35 {
      let now = Self.t0 + .seconds(second)
      let heard = session.heard(at: now, online: true, refresh: refresh)
      #expect(heard.withinBudget)
      if let instant = heard.report { reported.append(instant - Self.t0) }
    }
    #expect(reported == [.seconds(0), .seconds(10), .seconds(20), .seconds(30)])
    // Its last pong (34 s) was not reported: the end reports it, once.
    #expect(session.unreportedPresence().map { $0 - Self.t0 } == .seconds(34))
    #expect(session.unreportedPresence() == nil)
  }

  @Test func unknownPongsKeepTheClientAliveButAreNeverReported() {
    let session = Self.session(RecordingSink())
    for second in 0..<5 {
      let heard = session.heard(at: Self.t0 + .seconds(second), refresh: .seconds(10))
      #expect(heard == ClientSession.Heard(withinBudget: true, report: nil))
    }
    #expect(session.unreportedPresence() == nil)
    // The first online pong after them is reported at once.
    let online = session.heard(at: Self.t0 + .seconds(5), online: true, refresh: .seconds(10))
    #expect(online.report.map { $0 - Self.t0 } == .seconds(5))
  }

  @Test func aZeroRefreshReportsEveryOnlinePong() {
    let session = Self.session(RecordingSink())
    let reports = (0..<5).compactMap {
      session.heard(at: Self.t0 + .seconds($0), online: true, refresh: .zero).report
    }
    #expect(reports.count == 5)
    #expect(session.unreportedPresence() == nil)
  }

  @Test func aFloodingPongIsNotReported() {
    let session = Self.session(RecordingSink())
    let heard = (0..<11).map { _ in session.heard(at: Self.t0, online: true, refresh: .zero) }
    #expect(heard.filter { $0.report != nil }.count == 10)
    #expect(heard[10] == ClientSession.Heard(withinBudget: false, report: nil))
  }
}
