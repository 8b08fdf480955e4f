import NIOCore

/// Why a connection was closed by the guard rather than by its peer or by gRPC.
enum Refusal: String, Sendable, CaseIterable, Comparable {
  /// The listener already had ``ConnectionLimits/maxConnections`` open.
  case maxConnections = "max_connections"
  /// The peer's address already had ``ConnectionLimits/maxConnectionsPerAddress`` open.
  case maxConnectionsPerAddress = "max_connections_per_address"
  /// No TLS handshake and HTTP/2 preface within ``ConnectionLimits/handshakeTimeout``.
  case handshakeTimeout = "handshake_timeout"

  static func < (lhs: Refusal, rhs: Refusal) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The bookkeeping behind ``ConnectionGuard``: open connections in total and per address,
/// refusals awaiting their (rate-limited) log line, and when to give freed memory back.
///
/// A value type without locks, I/O or clocks: the guard keeps it in a `Mutex`, passes the
/// time in, and applies the returned actions outside the lock; tests drive it directly.
struct AdmissionState: Sendable {
  /// Refusals since the last log line, counted by reason, and how many connections are open.
  struct Report: Sendable, Equatable {
    var refused: [Refusal: Int]
    var open: Int
  }

  /// What to do about the log after a refusal.
  enum ReportAction: Sendable, Equatable {
    /// Log this report now.
    case log(Report)
    /// A line was logged less than ``reportInterval`` ago: call ``flushReport(now:)`` at this
    /// time, so that the refusals counted meanwhile are logged even if no more follow.
    case flush(at: NIODeadline)
    /// A flush is already due.
    case none
  }

  enum AdmitAction: Sendable, Equatable {
    case admit
    /// Close the connection, and act on the report.
    case refuse(Refusal, ReportAction)
  }

  let limits: ConnectionLimits
  /// At most one refusal log line per interval; the ones in between are summed into it.
  let reportInterval: TimeAmount
  /// Memory is trimmed only after a burst that reached this many open connections.
  let trimAfterPeak: Int
  /// At most one trim per interval while a burst drains (the last one, at zero, always runs).
  let trimInterval: TimeAmount

  private(set) var open = 0
  private var perAddress: [String: Int] = [:]
  private var pendingRefusals: [Refusal: Int] = [:]
  private var lastReport: NIODeadline?
  private var flushPending = false
  /// The most connections open since the last drain to zero.
  private var burstPeak = 0
  /// The most connections open since the last trim.
  private var trimLevel = 0
  private var lastTrim: NIODeadline?

  init(
    limits: ConnectionLimits, reportInterval: TimeAmount = .seconds(10),
    trimAfterPeak: Int = 1_000, trimInterval: TimeAmount = .seconds(10)
  ) {
    self.limits = limits
    self.reportInterval = reportInterval
    self.trimAfterPeak = trimAfterPeak
    self.trimInterval = trimInterval
  }

  /// How many connections `address` has open.
  func open(from address: String) -> Int { perAddress[address, default: 0] }

  /// A connection from `address` was accepted: count it, or refuse it when over a cap.
  mutating func admit(address: String, now: NIODeadline) -> AdmitAction {
    if open >= limits.maxConnections {
      return .refuse(.maxConnections, record(.maxConnections, now: now))
    }
    let fromAddress = perAddress[address, default: 0]
    if fromAddress >= limits.maxConnectionsPerAddress {
      return .refuse(.maxConnectionsPerAddress, record(.maxConnectionsPerAddress, now: now))
    }
    open += 1
    perAddress[address] = fromAddress + 1
    burstPeak = max(burstPeak, open)
    trimLevel = max(trimLevel, open)
    return .admit
  }

  /// An admitted connection closed. Returns whether now is the time to give freed memory back
  /// to the operating system. Only after a burst of at least ``trimAfterPeak`` connections:
  /// each time the open count has fallen to a quarter of what it was at the last trim (at most
  /// once per ``trimInterval``), and once more when the burst has drained to zero.
  mutating func release(address: String, now: NIODeadline) -> Bool {
    precondition(open > 0, "released more connections than admitted")
    open -= 1
    let remaining = perAddress[address, default: 1] - 1
    perAddress[address] = remaining > 0 ? remaining : nil
    guard burstPeak >= trimAfterPeak else { return false }
    if open == 0 {
      // Once per burst: the next needs another `trimAfterPeak` connections.
      burstPeak = 0
    } else {
      guard open <= trimLevel / 4 else { return false }
      if let lastTrim, now - lastTrim < trimInterval { return false }
    }
    lastTrim = now
    trimLevel = open
    return true
  }

  /// An admitted connection missed the handshake deadline (and is being closed).
  mutating func handshakeTimedOut(now: NIODeadline) -> ReportAction {
    record(.handshakeTimeout, now: now)
  }

  /// The flush asked for by ``ReportAction/flush(at:)``: the refusals counted since the last
  /// line, if any.
  mutating func flushReport(now: NIODeadline) -> Report? {
    flushPending = false
    guard !pendingRefusals.isEmpty else { return nil }
    lastReport = now
    return takeReport()
  }

  private mutating func record(_ refusal: Refusal, now: NIODeadline) -> ReportAction {
    pendingRefusals[refusal, default: 0] += 1
    guard let lastReport, now - lastReport < reportInterval else {
      lastReport = now
      return .log(takeReport())
    }
    if flushPending { return .none }
    flushPending = true
    return .flush(at: lastReport + reportInterval)
  }

  private mutating func takeReport() -> Report {
    defer { pendingRefusals = [:] }
    return Report(refused: pendingRefusals, open: open)
  }
}
