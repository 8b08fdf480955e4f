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

  @Test("memory is trimmed once a large burst has mostly closed, at most once per interval")
  func trimAfterBurst() {
    var state = AdmissionState(
      limits: ConnectionLimits(), trimAfterPeak: 100, trimInterval: .seconds(10))
    for _ in 0..<100 { _ = state.admit(address: "a", now: start) }
    var trims = 0
    var openAtTrim: [Int] = []
    for _ in 0..<100 where state.release(address: "a", now: start) {
      trims += 1
      openAtTrim.append(state.open)
    }
    // Three quarters gone: 25 left.
    #expect(openAtTrim == [25])
    // A second burst within the interval is not trimmed; after it, it is.
    for _ in 0..<200 { _ = state.admit(address: "a", now: start + .seconds(1)) }
    var late = 0
    for index in 0..<200
    where state.release(address: "a", now: start + .seconds(1 + Int64(index / 100) * 20)) {
      late += 1
    }
    #expect(trims == 1 && late == 1)
    // A small burst is never trimmed.
    var small = AdmissionState(limits: ConnectionLimits(), trimAfterPeak: 100)
    for _ in 0..<99 { _ = small.admit(address: "a", now: start) }
    #expect((0..<99).allSatisfy { _ in !small.release(address: "a", now: start) })
  }
}
