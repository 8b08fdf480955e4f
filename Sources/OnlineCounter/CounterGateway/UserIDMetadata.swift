import CounterModel
import GRPCCore

/// Where a client names its user: the `client-id` request metadata (the key is part of the
/// API contract), whose value follows the ``UserID`` rules.
public enum UserIDMetadata {
  public static let key = "client-id"

  /// The validated user id from request metadata, or `INVALID_ARGUMENT` saying what is wrong.
  static func userID(from metadata: Metadata) throws(RPCError) -> String {
    guard let id = metadata[stringValues: key].first(where: { _ in true }) else {
      throw RPCError(
        code: .invalidArgument, message: "missing '\(key)' metadata: it names the user")
    }
    if let problem = UserID.problem(with: id) {
      throw RPCError(code: .invalidArgument, message: "'\(key)' \(problem)")
    }
    return id
  }
}
