/// Which of one stream's online (EVEN/ODD) pongs the gateway reports to status.
///
/// Status keeps each user's latest instant and counts the users seen in the last 180 s, so
/// reporting a connected user at every pong (once a second) buys nothing but writes: at
/// 10⁶ online users, 10⁶ upserts a second. A stream instead reports its first online pong at
/// once (a new user is counted within a flush), then at most one every `interval`; the pongs
/// in between only move ``unreported``, which the stream's end reports, so a user who leaves
/// is counted for the full window after its last pong, as before. Status therefore gets
/// N / `interval` writes a second for N users who stay. What this trades: a gateway that
/// dies loses each of its users' last `interval` at most (instead of its last flush), so a
/// user who vanishes together with its gateway leaves the count up to `interval` early; one
/// who reconnects elsewhere is reported by its first pong there.
struct PresenceRefresh: Sendable {
  /// The last online pong reported.
  private(set) var lastReported: ContinuousClock.Instant?
  /// The latest online pong since ``lastReported`` that was not reported.
  private(set) var unreported: ContinuousClock.Instant?

  /// An online pong at `now`: the instant to report now, or `nil` when the last report is
  /// less than `interval` old (the pong is then kept for ``ended()``).
  mutating func online(at now: ContinuousClock.Instant, interval: Duration)
    -> ContinuousClock.Instant?
  {
    if let last = lastReported, now - last < interval {
      unreported = max(unreported ?? now, now)
      return nil
    }
    lastReported = now
    unreported = nil
    return now
  }

  /// The stream ended: its last online pong that was not reported, if any (once).
  mutating func ended() -> ContinuousClock.Instant? {
    defer { unreported = nil }
    return unreported
  }
}
