import ServiceKit
import Testing

@Suite("TimeSpan") struct TimeSpanTests {
  @Test(
    arguments: [
      ("24h", 86_400), ("30m", 1800), ("90s", 90), ("7d", 604_800), ("1h30m", 5400),
      ("1d2h3m4s", 93_784), ("0s", 0), ("2H", 7200),
    ] as [(String, Int64)])
  func parses(text: String, seconds: Int64) throws {
    #expect(try TimeSpan(parsing: text).seconds == seconds)
    #expect(TimeSpan(argument: text)?.seconds == seconds)
  }

  @Test(arguments: [
    ("", "empty duration"),
    ("30", "'30' has no unit"),
    ("1h30", "'1h30' ends in a number without a unit"),
    ("-5m", "'-5m' is negative"),
    ("5x", "'5x' has 'x', which is not a unit"),
    ("1.5h", "'1.5h' has '.', which is not a unit"),
    ("h", "'h' has a unit without a number"),
    ("30m1h", "'30m1h' repeats a unit or has them out of order"),
    ("1h1h", "'1h1h' repeats a unit or has them out of order"),
    ("99999999999999999999d", "'99999999999999999999d' is too long a duration"),
    ("999999999999999d", "'999999999999999d' is too long a duration"),
  ])
  func refuses(text: String, message: String) {
    let error = #expect(throws: TimeSpan.ParseError.self) { try TimeSpan(parsing: text) }
    #expect(error?.description.hasPrefix(message) == true, "\(String(describing: error))")
    #expect(TimeSpan(argument: text) == nil)
  }

  @Test func description() {
    #expect(TimeSpan(seconds: 86_400).description == "24h")
    #expect(TimeSpan(seconds: 5400).description == "1h30m")
    #expect(TimeSpan(seconds: 90).description == "1m30s")
    #expect(TimeSpan(seconds: 0).description == "0s")
    #expect(TimeSpan(seconds: 90).duration == .seconds(90))
  }
}
