public import ServiceLifecycle

/// One user seen online: the latest instant (milliseconds since the UNIX epoch) at which it
/// answered a ping with `STATUS_EVEN` or `STATUS_ODD`.
public struct PresenceRecord: Hashable, Sendable {
  public var userID: String
  public var lastSeenMillis: Int64

  public init(userID: String, lastSeenMillis: Int64) {
    self.userID = userID
    self.lastSeenMillis = lastSeenMillis
  }
}

/// Durable presence: the last time each user was seen online.
///
/// Implementations must make ``record(_:)`` idempotent and order-independent: the stored
/// value per user is the maximum timestamp ever recorded, so replaying a batch, or applying
/// batches out of order, yields the same state. Every replica of the status service may
/// share one store.
///
/// ## Running a store
///
/// A store is a ServiceLifecycle `Service`: its owner must keep ``run()`` running for as long
/// as it uses the store, e.g. by listing it in the same `ServiceGroup` as the gRPC server.
/// - ``PostgresPresenceStore`` needs it: its connection pool only works while `run()` runs
///   (calls made before wait, then fail with ``PresenceStoreError/Code-swift.struct/unavailable``
///   after their deadline).
/// - ``SQLitePresenceStore`` needs nothing; its `run()` (the default below) just waits for
///   graceful shutdown or cancellation, so it is harmless in a `ServiceGroup`.
///
/// A `ServiceGroup` shuts services down in reverse order, so list the store *before* the
/// server that uses it: the server drains first, then the store closes.
public protocol PresenceStore: Service {
  /// Stores `records`, keeping for each user the greatest timestamp seen so far.
  func record(_ records: [PresenceRecord]) async throws

  /// The number of distinct users whose stored timestamp is at or after `sinceMillis`.
  func countOnline(sinceMillis: Int64) async throws -> UInt64

  /// Deletes users last seen before `beforeMillis`; returns how many were deleted.
  func prune(beforeMillis: Int64) async throws -> Int
}

extension PresenceStore {
  /// Stores without background work have nothing to run: wait until the owner shuts down,
  /// because a `ServiceGroup` treats a service that returns early as a failure to stay up.
  public func run() async throws {
    do {
      try await gracefulShutdown()
    } catch is CancellationError {
      // Cancellation is how an owner outside a ServiceGroup stops us: a normal end.
    }
  }
}
