internal import Foundation
internal import GRDB
public import Logging

/// The embedded store: one SQLite file in WAL mode, via GRDB.
///
/// Durability: WAL with `synchronous = NORMAL` loses no committed transaction when the
/// *process* is killed (`kill -9`): commits are in the WAL file, which the next open replays.
/// Only an OS crash or power loss can drop the last transactions, which for presence (the
/// gateway re-reports every second) is an acceptable trade for not fsyncing every batch.
///
/// Concurrency: GRDB's async `read`/`write` run the SQLite work on its own dispatch queues
/// and suspend the caller, so no cooperative-pool thread blocks on disk I/O. Writes are
/// serialized by SQLite; reads run concurrently with writes (WAL snapshots).
///
/// Priorities: on Linux, libdispatch turns a queue's QoS into its threads' nice value
/// (user-initiated −2 when the process may raise its priority, e.g. as root, else 0; utility 2;
/// background 10). GRDB's default QoS is user-initiated, so its SQLite work used to outrank
/// the event loops and the cooperative pool that serve reads: a count request's wake-up
/// waited behind a batch's 12 ms upsert instead of preempting it (issue 12: 70% of the serving
/// threads' run-queue waits over 1 ms were behind SQLite, `docs/benchmarks.md`). So writes (bulk
/// ingest, prunes) run at ``writeQoS`` and reads (the count) at ``readQoS``, never above the
/// threads that serve.
public final class SQLitePresenceStore: PresenceStore {
  /// The QoS of writes: background (nice 10), below the serving threads; a batch costs ~12 ms
  /// of CPU and nothing waits on it but its gateway. (The scheduler may still let a woken
  /// thread wait for the writer's slice: hence the yield below.)
  static let writeQoS = DispatchQoS.background
  /// The QoS of reads: default (nice 0), the serving threads' own priority: a count that a
  /// caller waits for (the cache expired, or no cache) must not be starved either.
  static let readQoS = DispatchQoS.default
  /// Upserts between two `sched_yield()`s of the writer's thread (about 1 ms of work): a
  /// serving thread queued on the writer's CPU gets it then, rather than at the next tick.
  static let yieldEvery = 500

  /// Rows deleted per prune transaction: small enough that a batch write never waits long
  /// for the single SQLite writer.
  static let pruneChunk = 5_000

  /// The database file.
  public let path: String
  private let pool: DatabasePool
  private let logger: Logger

  /// Opens (creating if needed) the database at `path` and migrates its schema. The parent
  /// directory must exist (``makePresenceStore(url:logger:countCacheMaxAge:)`` creates it).
  public init(path: String, logger: Logger) throws {
    self.path = path
    self.logger = logger
    var configuration = Configuration()
    configuration.label = "presence"
    configuration.journalMode = .wal
    // Readers never wait (WAL); a writer waits for another writer instead of failing.
    configuration.busyMode = .timeout(5)
    configuration.qos = Self.readQoS
    configuration.writeTargetQueue = DispatchQueue(label: "presence.write", qos: Self.writeQoS)
    configuration.prepareDatabase { db in
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
    }
    do {
      pool = try DatabasePool(path: path, configuration: configuration)
      try Self.migrator.migrate(pool)
    } catch {
      throw PresenceStoreError(
        code: .storageFailure, message: "cannot open SQLite database at \(path)",
        cause: error)
    }
    logger.debug("presence store opened", metadata: ["presence.store.path": "\(path)"])
  }

  private static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: presence table") { db in
      try db.execute(
        sql: """
          CREATE TABLE presence (
            user_id TEXT PRIMARY KEY NOT NULL,
            last_seen_ms INTEGER NOT NULL
          );
          CREATE INDEX presence_last_seen_ms ON presence (last_seen_ms);
          """)
    }
    return migrator
  }

  public func record(_ records: [PresenceRecord]) async throws {
    guard !records.isEmpty else { return }
    try await mapErrors("record") {
      // One transaction per batch: one WAL commit however many users it carries. The
      // WHERE makes a stale or replayed timestamp a no-op (max wins) without rewriting the
      // row; duplicates inside a batch are therefore harmless too.
      try await pool.write { db in
        let statement = try db.cachedStatement(
          sql: """
            INSERT INTO presence (user_id, last_seen_ms) VALUES (?, ?)
            ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms
            WHERE excluded.last_seen_ms > presence.last_seen_ms
            """)
        for (index, record) in records.enumerated() {
          if index > 0, index % Self.yieldEvery == 0 { sched_yield() }
          try statement.execute(arguments: [record.userID, record.lastSeenMillis])
        }
      }
    }
  }

  public func countOnline(sinceMillis: Int64) async throws -> UInt64 {
    try await mapErrors("count") {
      // Answered from the index alone (a covering range scan of presence_last_seen_ms).
      let count = try await pool.read { db in
        try Int64.fetchOne(
          db, sql: "SELECT count(*) FROM presence WHERE last_seen_ms >= ?",
          arguments: [sinceMillis]) ?? 0
      }
      return UInt64(count)
    }
  }

  public func prune(beforeMillis: Int64) async throws -> Int {
    try await mapErrors("prune") {
      var total = 0
      // Bounded chunks, each its own short transaction, so writers interleave with a big
      // prune instead of waiting for it.
      while true {
        try Task.checkCancellation()
        let deleted = try await pool.write { db in
          try db.execute(
            sql: """
              DELETE FROM presence WHERE rowid IN (
                SELECT rowid FROM presence WHERE last_seen_ms < ? LIMIT ?)
              """,
            arguments: [beforeMillis, Self.pruneChunk])
          return db.changesCount
        }
        total += deleted
        if deleted < Self.pruneChunk { break }
      }
      if total > 0 {
        logger.debug("pruned presence", metadata: ["presence.pruned": "\(total)"])
      }
      return total
    }
  }

  /// Closes the database; later calls fail. Optional: the pool also closes when released.
  public func close() throws {
    try pool.close()
  }

  private func mapErrors<T>(
    _ operation: String, _ body: () async throws -> T
  ) async throws -> T {
    do {
      return try await body()
    } catch let error as CancellationError {
      throw error
    } catch let error as DatabaseError {
      // BUSY/LOCKED: another writer held the file past the busy timeout; retryable.
      let code: PresenceStoreError.Code =
        switch error.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED: .unavailable
        default: .storageFailure
        }
      throw PresenceStoreError(code: code, message: "SQLite \(operation) failed", cause: error)
    }
  }
}
