import Synchronization

/// What a client process has seen, shared by all its simulated clients.
///
/// Ping intervals go into a fixed histogram of 1 ms buckets up to 5 s (plus one overflow
/// bucket), so memory is constant however many pings arrive.
public final class ClientStats: Sendable {
  public struct Summary: Sendable, CustomStringConvertible {
    public var connected: Int
    public var pingsReceived: UInt64
    /// Ping interval percentiles over the period, in milliseconds (`nil` with no intervals).
    public var intervalP50Millis: Int?
    public var intervalP99Millis: Int?
    /// Streams that ended over the period, and why the last one did (e.g. the gateway is
    /// unreachable), so that `connected=0` comes with its reason.
    public var streamsEnded = 0
    public var lastEndReason: String?

    public var description: String {
      let p50 = intervalP50Millis.map { "\($0)ms" } ?? "-"
      let p99 = intervalP99Millis.map { "\($0)ms" } ?? "-"
      var line =
        "connected=\(connected) pings=\(pingsReceived) interval_p50=\(p50) interval_p99=\(p99)"
      if streamsEnded > 0, let lastEndReason {
        line += " streams_ended=\(streamsEnded) last_end=\"\(lastEndReason)\""
      }
      return line
    }
  }

  static let bucketCount = 5_001

  private struct State {
    var connected = 0
    var pings: UInt64 = 0
    var buckets = [UInt32](repeating: 0, count: ClientStats.bucketCount)
    var streamsEnded = 0
    var lastEndReason: String?
  }

  private let state = Mutex(State())

  public init() {}

  func connectionChanged(by delta: Int) { state.withLock { $0.connected += delta } }

  func ping(interval: Duration?) {
    state.withLock { state in
      state.pings += 1
      if let interval {
        let millis = Int(interval / .milliseconds(1))
        state.buckets[min(max(millis, 0), Self.bucketCount - 1)] &+= 1
      }
    }
  }

  func streamEnded(reason: String) {
    state.withLock { state in
      state.streamsEnded += 1
      state.lastEndReason = reason
    }
  }

  /// Streams currently open.
  public var connected: Int { state.withLock { $0.connected } }

  /// The counters, with percentiles over the intervals since the previous call (which are
  /// then forgotten, so each summary describes its own period).
  public func summary() -> Summary {
    let (connected, pings, buckets, ended, reason) = state.withLock { state in
      defer {
        state.buckets = [UInt32](repeating: 0, count: Self.bucketCount)
        state.streamsEnded = 0
      }
      return (
        state.connected, state.pings, state.buckets, state.streamsEnded, state.lastEndReason
      )
    }
    let total = buckets.reduce(UInt64(0)) { $0 + UInt64($1) }
    func percentile(_ p: Double) -> Int? {
      guard total > 0 else { return nil }
      let rank = UInt64((Double(total) * p).rounded(.up))
      var seen: UInt64 = 0
      for (millis, count) in buckets.enumerated() {
        seen += UInt64(count)
        if seen >= rank { return millis }
      }
      return buckets.count - 1
    }
    return Summary(
      connected: connected, pingsReceived: pings, intervalP50Millis: percentile(0.5),
      intervalP99Millis: percentile(0.99), streamsEnded: ended, lastEndReason: reason)
  }
}
