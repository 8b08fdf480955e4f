import NIOCore
import Testing

@testable import ConnectionKit

/// The bookkeeping alone, on a clock the test controls.
@Suite struct AdmissionStateTests {
  let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

  @Test("caps: total first, then per address; a release frees a slot of both")
  func caps() {
    var state = AdmissionState(
      limits: ConnectionLimits(maxConnections: 3, maxConnectionsPerAddress: 2))
    #expect(state.admit(address: "10.0.0.1", now: start) == .admit)
    #expect(state.admit(address: "10.0.0.1", now: start) == .admit)
    guard case .refuse(.maxConnectionsPerAddress, _) = state.admit(address: "10.0.0.1", now: start)
    else {
      Issue.record("a third connection from one address must be refused")
      return
    }
    #expect(state.admit(address: "10.0.0.2", now: start) == .admit)
    guard case .refuse(.maxConnections, _) = state.admit(address: "10.0.0.3", now: start) else {
      Issue.record("a fourth connection in all must be refused")
      return
    }
    #expect(state.open == 3)
    _ = state.release(address: "10.0.0.1", now: start)
    #expect(state.open(from: "10.0.0.1") == 1)
    #expect(state.admit(address: "10.0.0.1", now: start) == .admit)
  }

  @Test("refusals: the first is logged at once, later ones summed into one flush per interval")
  func rateLimitedReports() {
    var state = AdmissionState(
      limits: ConnectionLimits(maxConnections: 1), reportInterval: .seconds(10))
    #expect(state.admit(address: "a", now: start) == .admit)
    #expect(
      state.admit(address: "b", now: start)
        == .refuse(.maxConnections, .log(.init(refused: [.maxConnections: 1], open: 1))))
    // Within the interval: one flush is scheduled for its end, then nothing more.
    #expect(
      state.admit(address: "b", now: start + .seconds(1))
        == .refuse(.maxConnections, .flush(at: start + .seconds(10))))
    for second in 2...5 {
      #expect(
        state.admit(address: "b", now: start + .seconds(Int64(second)))
          == .refuse(.maxConnections, .none))
    }
    #expect(state.handshakeTimedOut(now: start + .seconds(6)) == .none)
    #expect(
      state.flushReport(now: start + .seconds(10))
        == .init(refused: [.maxConnections: 5, .handshakeTimeout: 1], open: 1))
    // Nothing pending: the next flush has nothing to say.
    #expect(state.flushReport(now: start + .seconds(20)) == nil)
    #expect(
      state.handshakeTimedOut(now: start + .seconds(21))
        == .log(.init(refused: [.handshakeTimeout: 1], open: 1)))
  }

  @Test("memory is trimmed as a large burst drains: each quarter, rate-limited, and at zero")
  func trimAfterBurst() {
    var state = AdmissionState(
      limits: ConnectionLimits(), trimAfterPeak: 100, trimInterval: .seconds(10))
    /// Admits `count`, then releases them all at `seconds(index)`; returns the open counts at
    /// which a trim was asked for.
    func burst(_ count: Int, seconds: (Int) -> Int64) -> [Int] {
      for _ in 0..<count { _ = state.admit(address: "a", now: start) }
      var trimmedAt: [Int] = []
      for index in 0..<count
      where state.release(address: "a", now: start + .seconds(seconds(index))) {
        trimmedAt.append(state.open)
      }
      return trimmedAt
    }
    // All at once: a quarter (25 of 100) is trimmed; 6 is within the interval; zero always.
    #expect(burst(100) { _ in 0 } == [25, 0])
    // Spread over time: 200 → 50 → 12 → 3 → 0, each at least 10 s after the one before.
    #expect(burst(200) { 20 + Int64($0) * 10 } == [50, 12, 3, 0])
    // A burst below the threshold is never trimmed.
    #expect(burst(99) { Int64($0) * 100 } == [])
  }
}
