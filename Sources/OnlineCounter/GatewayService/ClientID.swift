import GRPCCore

/// The `client-id` metadata rules: 1 to 128 bytes of `[A-Za-z0-9._:-]`.
///
/// Kept identical to `StatusService.UserID` (the status service checks again); a test checks
/// both on the same inputs.
public enum ClientID {
  public static let metadataKey = "client-id"
  public static let maxBytes = 128

  /// Why `id` is not a valid client id, or `nil` when it is.
  public static func problem(with id: String) -> String? {
    let bytes = id.utf8
    if bytes.isEmpty { return "is empty" }
    if bytes.count > maxBytes { return "is \(bytes.count) bytes, more than \(maxBytes)" }
    if let bad = bytes.first(where: { !isAllowed($0) }) {
      return "contains byte 0x\(String(bad, radix: 16)) outside [A-Za-z0-9._:-]"
    }
    return nil
  }

  /// The validated id from request metadata, or `INVALID_ARGUMENT` saying what is wrong.
  static func from(_ metadata: Metadata) throws(RPCError) -> String {
    guard let id = metadata[stringValues: metadataKey].first(where: { _ in true }) else {
      throw RPCError(
        code: .invalidArgument, message: "missing '\(metadataKey)' metadata: it names the user")
    }
    if let problem = problem(with: id) {
      throw RPCError(code: .invalidArgument, message: "'\(metadataKey)' \(problem)")
    }
    return id
  }

  @inline(__always)
  static func isAllowed(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
      UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
      UInt8(ascii: ":"), UInt8(ascii: "-"):
      return true
    default:
      return false
    }
  }

  /// A stable hash (FNV-1a), so that a client lands in the same ping slot on every gateway
  /// and every run: `hashValue` is seeded per process.
  static func stableHash(_ id: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in id.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x100_0000_01b3
    }
    return hash
  }
}
