import CounterModel
import GRPCCore

/// The `client-id` metadata that names a client; its value follows the ``UserID`` rules.
public enum ClientID {
  public static let metadataKey = "client-id"

  /// The validated id from request metadata, or `INVALID_ARGUMENT` saying what is wrong.
  static func from(_ metadata: Metadata) throws(RPCError) -> String {
    guard let id = metadata[stringValues: metadataKey].first(where: { _ in true }) else {
      throw RPCError(
        code: .invalidArgument, message: "missing '\(metadataKey)' metadata: it names the user")
    }
    if let problem = UserID.problem(with: id) {
      throw RPCError(code: .invalidArgument, message: "'\(metadataKey)' \(problem)")
    }
    return id
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
