/// How many pongs one stream may send: a token bucket refilled at a few per second.
///
/// A client answers each ping (one a second) with one pong; a burst allows for a reconnect or
/// a delayed batch. A client that sends far more is abusing the gateway (17,600 pongs a second
/// from one client kept a core of a debug build busy) and its stream is ended.
struct PongBudget: Sendable {
  /// Pongs that may arrive at once.
  static let burst = 10.0
  /// Pongs a second, sustained: three times what a well-behaved client sends.
  static let perSecond = 3.0

  private var tokens = PongBudget.burst
  private var last: ContinuousClock.Instant

  init(now: ContinuousClock.Instant) { last = now }

  /// Spends one pong at `now`; `false` when the stream has none left.
  mutating func spend(at now: ContinuousClock.Instant) -> Bool {
    let elapsed = Double((now - last) / .milliseconds(1)) / 1000
    last = max(last, now)
    tokens = min(Self.burst, tokens + max(elapsed, 0) * Self.perSecond)
    guard tokens >= 1 else { return false }
    tokens -= 1
    return true
  }
}
