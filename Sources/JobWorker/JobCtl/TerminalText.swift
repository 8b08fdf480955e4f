/// Text from the server or the command line made safe to print on a terminal.
///
/// Job commands, arguments, ids and error messages come from other users (or from a server
/// that echoes what they sent). Printed raw, an escape sequence in them is executed by the
/// terminal of whoever runs `jobctl list`: it can retitle the window, clear the screen, move
/// the cursor to forge table rows, or (on some terminals) answer back into the shell's input.
/// Every field `jobctl` prints as text goes through ``escaped(_:)``; JSON output and raw job
/// output (`logs`, `run`) are data and stay exact.
public enum TerminalText {
  /// `text` with every character a terminal would interpret escaped, in the C style that
  /// `systemd-escape` and `journalctl` also use, so the result is one line of printable
  /// characters and can be read back unambiguously:
  ///
  /// - C0 controls (U+0000–U+001F) and DEL (U+007F): `\n`, `\r`, `\t`, `\a`, `\b`, `\f`, `\v`,
  ///   `\e` for ESC, `\xHH` for the rest;
  /// - C1 controls (U+0080–U+009F: CSI U+009B, OSC U+009D, … which some terminals honour as
  ///   ESC sequences), the line and paragraph separators (U+2028, U+2029) and the
  ///   bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069: they reorder what
  ///   follows, so a command could display as something else): `\u{HHHH}`;
  /// - the backslash itself: `\\`, so that a literal `\e` typed by a user cannot pass for an
  ///   escaped ESC.
  ///
  /// Everything else, including non-ASCII letters, is kept.
  public static func escaped(_ text: some StringProtocol) -> String {
    // The common case (plain printable text) costs one scan and no copy.
    guard text.unicodeScalars.contains(where: needsEscaping) else { return String(text) }
    var result = ""
    result.reserveCapacity(text.utf8.count + 8)
    for scalar in text.unicodeScalars {
      guard needsEscaping(scalar) else {
        result.unicodeScalars.append(scalar)
        continue
      }
      switch scalar.value {
      case 0x5C: result += "\\\\"
      case 0x07: result += "\\a"
      case 0x08: result += "\\b"
      case 0x09: result += "\\t"
      case 0x0A: result += "\\n"
      case 0x0B: result += "\\v"
      case 0x0C: result += "\\f"
      case 0x0D: result += "\\r"
      case 0x1B: result += "\\e"
      case 0x00..<0x80: result += "\\x" + hex(scalar.value, digits: 2)
      default: result += "\\u{" + hex(scalar.value, digits: 4) + "}"
      }
    }
    return result
  }

  /// Whether ``escaped(_:)`` rewrites `scalar`.
  static func needsEscaping(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x00...0x1F, 0x5C, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
    default: false
    }
  }

  /// JSON text with the characters JSON allows raw but a terminal interprets (DEL, C1
  /// controls, line separators, bidirectional controls) written as `\uHHHH` escapes. The JSON
  /// value is unchanged: a parser reads back exactly the same strings. JSONEncoder already
  /// escapes C0 controls; these can only occur inside strings, since JSON's structure is ASCII.
  static func jsonSafe(_ json: String) -> String {
    guard json.unicodeScalars.contains(where: { $0.value >= 0x7F && needsEscaping($0) }) else {
      return json
    }
    var result = ""
    result.reserveCapacity(json.utf8.count + 8)
    for scalar in json.unicodeScalars {
      if scalar.value >= 0x7F && needsEscaping(scalar) {
        result += "\\u" + hex(scalar.value, digits: 4)
      } else {
        result.unicodeScalars.append(scalar)
      }
    }
    return result
  }

  private static func hex(_ value: UInt32, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
  }
}
