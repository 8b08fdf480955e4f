import GRPCCore
import Testing

@testable import CounterClient

/// The client's reconnect delays, by how the stream ended (no timing involved).
@Suite struct ReconnectPolicyTests {
  static let policy = ReconnectPolicy(
    initialBackoff: .milliseconds(200), maxBackoff: .seconds(10),
    unreachableMaxBackoff: .seconds(1), failoverSpread: .milliseconds(100),
    stableAfter: .seconds(10))

  @Test func endingsAreClassified() {
    typealias P = ReconnectPolicy
    #expect(P.ending(receivedPings: true, code: .unavailable, lived: .seconds(1)) == .lost)
    #expect(P.ending(receivedPings: true, code: nil, lived: .seconds(1)) == .lost)
    #expect(
      P.ending(receivedPings: true, code: .deadlineExceeded, lived: .seconds(6))
        == .timedOut(lived: .seconds(6)))
    #expect(P.ending(receivedPings: false, code: .unavailable, lived: .zero) == .unreachable)
    #expect(P.ending(receivedPings: false, code: .resourceExhausted, lived: .zero) == .refused)
  }

  /// A dead gateway and one still reconnecting: the client alternates between them with
  /// delays of at most 1 s however long it lasts, and fails over at once after it worked.
  @Test func unreachableGatewaysAreRetriedWithinASecond() {
    var failures = 0
    let caps = (0..<10).map { _ in Self.policy.cap(after: .unreachable, failures: &failures) }
    #expect(
      caps.prefix(4) == [.milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1)])
    #expect(caps.allSatisfy { $0 <= .seconds(1) })
    #expect(Self.policy.cap(after: .lost, failures: &failures) == .milliseconds(100))
    #expect(failures == 0)
  }

  /// A gateway that answers "no" is not hammered; a client that is too slow to answer pings
  /// is damped unless its stream lived long.
  @Test func refusalsAndPongTimeoutsBackOffToTheMaximum() {
    var failures = 0
    let caps = (0..<8).map { _ in Self.policy.cap(after: .refused, failures: &failures) }
    #expect(caps.last == .seconds(10))
    let short = Self.policy.cap(after: .timedOut(lived: .seconds(6)), failures: &failures)
    #expect(short == .seconds(10))
    let long = Self.policy.cap(after: .timedOut(lived: .seconds(11)), failures: &failures)
    #expect(long == .milliseconds(200))
  }
}
