import GRPCCore
import Testing

@testable import CounterGateway

/// A session's defences, on instants the test chooses (no wall-clock timing).
@Suite struct ClientSessionTests {
  static let t0 = ContinuousClock.now
  static let timeout = Duration.seconds(5)

  static func session() -> ClientSession {
    ClientSession(id: 1, userID: "u", slot: 0, now: t0)
  }

  @Test func aClientAnsweringEachPingIsNeverCut() {
    let session = Self.session()
    for second in 0..<600 {
      #expect(session.heard(at: Self.t0 + .seconds(second)))
    }
    #expect(session.closeReason == nil)
  }

  @Test func aPongFloodEndsTheStreamAfterTheBurst() async {
    let session = Self.session()
    let answers = (0..<20).map { session.heard(at: Self.t0 + .milliseconds($0)) }
    // The burst of 10 is allowed, the 11th pong within the same few milliseconds is not.
    #expect(answers.prefix(10).allSatisfy { $0 })
    #expect(answers[10] == false)
    #expect(session.closeReason?.code == .resourceExhausted)
    // The gateway's watcher task sees the end.
    for await _ in session.closed {}
  }

  @Test func aWriteBlockedLongerThanThePongTimeoutEndsTheStream() async {
    let session = Self.session()
    session.heard(at: Self.t0)
    session.writeStarted(at: Self.t0)
    // Pongs keep coming (the client writes but never reads): the pong timeout cannot see it.
    session.heard(at: Self.t0 + .seconds(4))
    #expect(session.tick(now: Self.t0 + .seconds(4), timeout: Self.timeout) == .pinged)
    session.heard(at: Self.t0 + .seconds(6))
    #expect(session.tick(now: Self.t0 + .seconds(6), timeout: Self.timeout) == .expired)
    #expect(session.closeReason?.code == .resourceExhausted)
    #expect(session.closeReason?.message.contains("has not read its pings") == true)
    for await _ in session.closed {}
  }

  @Test func writesThatReturnKeepTheStream() {
    let session = Self.session()
    for second in 0..<60 {
      let now = Self.t0 + .seconds(second)
      session.heard(at: now)
      session.writeStarted(at: now)
      session.writeFinished()
      #expect(session.tick(now: now, timeout: Self.timeout) == .pinged)
    }
    #expect(session.closeReason == nil)
  }
}
