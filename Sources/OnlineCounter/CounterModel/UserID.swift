/// The rules for a user (client) id: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
///
/// One definition for both services: the gateway enforces it on the `client-id` metadata, and
/// the status service checks again because a buggy or compromised gateway must not be able to
/// fill the store with garbage keys.
public enum UserID {
  public static let maxBytes = 128

  /// Why `id` is not a valid user id, or `nil` when it is.
  public static func problem(with id: String) -> String? {
    let bytes = id.utf8
    if bytes.isEmpty { return "is empty" }
    if bytes.count > maxBytes { return "is \(bytes.count) bytes, more than \(maxBytes)" }
    if let bad = id.unicodeScalars.first(where: { !$0.isASCII || !isAllowed(UInt8($0.value)) }) {
      return "contains \(describe(bad)) outside [A-Za-z0-9._:-]"
    }
    return nil
  }

  @inline(__always)
  public static func isAllowed(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
      UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
      UInt8(ascii: ":"), UInt8(ascii: "-"):
      return true
    default:
      return false
    }
  }

  /// The character as the user typed it, e.g. `"é" (U+00E9)`, not its first UTF-8 byte;
  /// control, format and space characters by code point only, so that the message cannot
  /// carry terminal escapes or invisible text.
  static func describe(_ scalar: Unicode.Scalar) -> String {
    let hex = String(scalar.value, radix: 16, uppercase: true)
    let code = "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    switch scalar.properties.generalCategory {
    case .control, .format, .surrogate, .privateUse, .unassigned, .spaceSeparator,
      .lineSeparator, .paragraphSeparator:
      return code
    default:
      return "\"\(scalar)\" (\(code))"
    }
  }
}
