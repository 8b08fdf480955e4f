public import ArgumentParser
import Foundation

/// A byte count with an optional binary suffix, as flags and environment variables take it:
/// `4096`, `64K`, `256M`, `2G` (`KiB`, `MB`… are read the same way).
public struct ByteCount: Hashable, Sendable, CustomStringConvertible, ExpressibleByArgument {
  public var bytes: UInt64

  public init(bytes: UInt64) {
    self.bytes = bytes
  }

  public init?(argument: String) {
    let text = argument.uppercased().replacingOccurrences(of: "IB", with: "")
      .replacingOccurrences(of: "B", with: "")
    let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = Substring(text)
    var multiplier: UInt64 = 1
    if let last = digits.last, let value = multipliers[last] {
      multiplier = value
      digits = digits.dropLast()
    }
    guard let number = UInt64(digits) else { return nil }
    let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { return nil }
    bytes = product
  }

  /// The largest suffix that divides the count exactly: `64M`, `1536K`, `100`.
  public var description: String {
    for (suffix, unit) in [("T", UInt64(1) << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)]
    where bytes > 0 && bytes % unit == 0 {
      return "\(bytes / unit)\(suffix)"
    }
    return "\(bytes)"
  }
}
