import Foundation
import JobCtl
import Testing

@Suite("Terminal escaping of what jobctl prints")
struct TerminalTextTests {
  @Test(
    "control characters become visible escapes",
    arguments: [
      ("plain ascii 1-2_3", "plain ascii 1-2_3"),
      ("naïve café 日本", "naïve café 日本"),
      ("\u{1B}]0;pwned\u{07}\u{1B}[2J", "\\e]0;pwned\\a\\e[2J"),
      ("a\nb\r\tc", "a\\nb\\r\\tc"),
      ("\u{0}\u{1}\u{7F}", "\\x00\\x01\\x7F"),
      ("\u{08}\u{0B}\u{0C}", "\\b\\v\\f"),
      // C1: CSI and OSC as single code points, NEL, and the highest.
      ("\u{9B}2J\u{9D}0;x\u{9C}\u{85}\u{9F}", "\\u{009B}2J\\u{009D}0;x\\u{009C}\\u{0085}\\u{009F}"),
      // Bidirectional override and isolates, line and paragraph separators.
      (
        "ls \u{202E}txt.exe\u{2066}\u{2069}\u{2028}\u{2029}",
        "ls \\u{202E}txt.exe\\u{2066}\\u{2069}\\u{2028}\\u{2029}"
      ),
      // A typed backslash cannot pass for an escape.
      ("\\e[2J", "\\\\e[2J"),
    ])
  func escapes(input: String, expected: String) {
    #expect(TerminalText.escaped(input) == expected)
  }

  @Test("every scalar a terminal interprets is escaped, and nothing else")
  func exhaustiveLowRange() {
    for value in UInt32(0)...0x2FFF {
      guard let scalar = Unicode.Scalar(value) else { continue }
      let escaped = TerminalText.escaped(String(Character(scalar)))
      let dangerous =
        value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x5C
        || [0x2028, 0x2029].contains(value) || (0x202A...0x202E).contains(value)
        || (0x2066...0x2069).contains(value)
      if dangerous {
        #expect(escaped.hasPrefix("\\"), "U+\(String(value, radix: 16))")
        #expect(
          escaped.unicodeScalars.allSatisfy { (0x20..<0x7F).contains($0.value) },
          "U+\(String(value, radix: 16)) → \(escaped)")
      } else {
        #expect(escaped == String(Character(scalar)), "U+\(String(value, radix: 16))")
      }
    }
  }
}
