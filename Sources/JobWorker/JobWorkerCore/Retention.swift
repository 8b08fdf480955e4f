import Foundation

/// Which ended jobs a sweep forgets: those that ended longer than the retention period ago,
/// then, while the stored output of all jobs is over the cap, the oldest remaining ended jobs.
/// Running jobs count toward the total but are never chosen, so the total stays over the cap
/// only while running jobs alone hold more. Pure: `JobManager.sweep(now:)` feeds it a snapshot
/// and applies the result.
enum Retention {
  /// One job's share of the data directory.
  struct Entry: Equatable {
    var id: JobID
    /// nil while the job runs.
    var endedAt: Date?
    var bytes: UInt64
  }

  /// Why a job is forgotten.
  enum Reason: Equatable {
    /// It ended longer than the retention period ago.
    case expired
    /// The stored output was over the cap and it was the oldest ended job left.
    case overCap
  }

  /// The jobs to forget, expired ones first, then the over-cap ones oldest first.
  static func plan(
    _ entries: [Entry], now: Date, retention: Duration, maxStoredBytes: UInt64
  ) -> [(entry: Entry, reason: Reason)] {
    let cutoff = now.addingTimeInterval(-retention.timeInterval)
    var chosen: [(entry: Entry, reason: Reason)] = []
    var kept: [Entry] = []
    var total: UInt64 = 0
    for entry in entries {
      if let endedAt = entry.endedAt, endedAt <= cutoff {
        chosen.append((entry, .expired))
      } else {
        kept.append(entry)
        total += entry.bytes
      }
    }
    guard total > maxStoredBytes else { return chosen }
    // Oldest first; ties by id so that the choice does not depend on dictionary order.
    let ended = kept.filter { $0.endedAt != nil }.sorted {
      ($0.endedAt!, $0.id.description) < ($1.endedAt!, $1.id.description)
    }
    for entry in ended {
      guard total > maxStoredBytes else { break }
      chosen.append((entry, .overCap))
      total -= entry.bytes
    }
    return chosen
  }
}

/// What one `JobManager.sweep(now:)` forgot.
public struct RetentionSweep: Sendable, Equatable {
  /// The ended jobs (and output files of earlier runs) forgotten, with their files removed.
  public var forgotten: [JobID] = []
  /// Output bytes removed from the data directory.
  public var bytes: UInt64 = 0
  /// How many of them had ended longer than the retention period ago; the others went because
  /// the stored output was over the cap.
  public var expired: Int = 0

  public init() {}
}

extension Duration {
  /// The duration in seconds as a `TimeInterval`, for `Date` arithmetic.
  var timeInterval: TimeInterval {
    let (seconds, attoseconds) = components
    return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
  }

  /// Whole hours, minutes and seconds as people write them: `24h`, `1h30m`, `90s` -> `1m30s`;
  /// under a second in milliseconds (tests use such retentions). Other fractions are left out.
  var retentionText: String {
    var seconds = components.seconds
    guard seconds > 0 else { return "\(max(0, components.attoseconds / 1_000_000_000_000_000))ms" }
    var text = ""
    for (unit, size) in [("h", Int64(3600)), ("m", 60), ("s", 1)] where seconds >= size {
      text += "\(seconds / size)\(unit)"
      seconds %= size
    }
    return text
  }
}
