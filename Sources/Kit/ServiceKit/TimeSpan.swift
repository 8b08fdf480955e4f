public import ArgumentParser
import Foundation

/// A whole number of seconds as flags and environment variables take it: one or more
/// number-and-unit pairs with the units `d`, `h`, `m` and `s`, largest first: `24h`, `30m`,
/// `90s`, `7d`, `1h30m`. A bare number is refused (is `30` seconds or minutes?), and so are
/// signs, fractions and spaces; ``init(parsing:)`` says which.
public struct TimeSpan: Hashable, Sendable, CustomStringConvertible, ExpressibleByArgument {
  public var seconds: Int64

  public init(seconds: Int64) {
    self.seconds = seconds
  }

  /// Why a text is not a time span, in words for an operator.
  public struct ParseError: Error, CustomStringConvertible {
    public var description: String
  }

  private static let units: [(unit: Character, seconds: Int64)] = [
    ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1),
  ]

  public init(parsing text: String) throws(ParseError) {
    let example = "use a number with a unit (d, h, m or s), e.g. 24h, 30m or 1h30m"
    guard !text.isEmpty else { throw ParseError(description: "empty duration; \(example)") }
    if text.first == "-" {
      throw ParseError(description: "'\(text)' is negative; \(example)")
    }
    var total: Int64 = 0
    var digits = ""
    var lastUnit: Int?
    for character in text.lowercased() {
      if character.isASCII, character.isNumber {
        digits.append(character)
        continue
      }
      guard let index = Self.units.firstIndex(where: { $0.unit == character }) else {
        throw ParseError(
          description: "'\(text)' has '\(character)', which is not a unit; \(example)")
      }
      guard !digits.isEmpty else {
        throw ParseError(description: "'\(text)' has a unit without a number; \(example)")
      }
      guard lastUnit.map({ index > $0 }) ?? true else {
        throw ParseError(
          description: "'\(text)' repeats a unit or has them out of order; \(example)")
      }
      guard let number = Int64(digits) else {
        throw ParseError(description: "'\(text)' is too long a duration")
      }
      let (product, overflow) = number.multipliedReportingOverflow(by: Self.units[index].seconds)
      let (sum, overflowSum) = total.addingReportingOverflow(product)
      guard !overflow, !overflowSum else {
        throw ParseError(description: "'\(text)' is too long a duration")
      }
      total = sum
      digits = ""
      lastUnit = index
    }
    guard digits.isEmpty else {
      throw ParseError(
        description: lastUnit == nil
          ? "'\(text)' has no unit; \(example)"
          : "'\(text)' ends in a number without a unit; \(example)")
    }
    seconds = total
  }

  public init?(argument: String) {
    guard let parsed = try? TimeSpan(parsing: argument) else { return nil }
    self = parsed
  }

  public var duration: Duration { .seconds(seconds) }

  /// Hours, minutes and seconds, largest first: `24h`, `1h30m`, `90s` reads `1m30s`.
  public var description: String {
    guard seconds > 0 else { return "\(seconds)s" }
    var rest = seconds
    var text = ""
    for (unit, size) in [("h", Int64(3600)), ("m", 60), ("s", 1)] where rest >= size {
      text += "\(rest / size)\(unit)"
      rest %= size
    }
    return text
  }
}
