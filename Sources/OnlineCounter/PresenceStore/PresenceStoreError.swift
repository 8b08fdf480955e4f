/// An error from a ``PresenceStore`` or from ``makePresenceStore(url:logger:countCacheMaxAge:)``.
///
/// `code` tells a caller what to do: retry later (``Code-swift.struct/unavailable``), fix the
/// configuration (``Code-swift.struct/invalidConfiguration``), or report a bug or a broken
/// database (``Code-swift.struct/storageFailure``).
public struct PresenceStoreError: Error, Hashable, Sendable, CustomStringConvertible {
  /// A kind of failure; a struct so that codes can be added without breaking callers.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
      case invalidConfiguration, unavailable, storageFailure
    }
    private let wrapped: Wrapped

    /// The store URL or options are wrong; retrying will not help.
    public static let invalidConfiguration = Code(wrapped: .invalidConfiguration)
    /// The database cannot be reached right now (down, restarting, overloaded, deadline
    /// exceeded); the operation did not take effect and may be retried. Maps to gRPC
    /// `UNAVAILABLE`.
    public static let unavailable = Code(wrapped: .unavailable)
    /// The database answered with an error that retrying is unlikely to fix (disk full,
    /// corrupt file, schema mismatch). Maps to gRPC `INTERNAL`.
    public static let storageFailure = Code(wrapped: .storageFailure)

    public var description: String {
      switch wrapped {
      case .invalidConfiguration: "invalid configuration"
      case .unavailable: "unavailable"
      case .storageFailure: "storage failure"
      }
    }
  }

  public var code: Code
  public var message: String
  /// The lower-level error, for logs. Not part of equality.
  public var cause: (any Error)?

  public init(code: Code, message: String, cause: (any Error)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public var description: String {
    if let cause {
      return "\(code): \(message) (cause: \(String(reflecting: cause)))"
    }
    return "\(code): \(message)"
  }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    lhs.code == rhs.code && lhs.message == rhs.message
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(code)
    hasher.combine(message)
  }
}
