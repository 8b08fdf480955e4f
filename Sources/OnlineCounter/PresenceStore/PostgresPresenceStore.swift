public import Logging
internal import NIOSSL
public import PostgresNIO
internal import ServiceLifecycle
internal import Synchronization

/// The shared store for many status replicas: one PostgreSQL table behind a connection pool.
///
/// - Writes: one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT … DO UPDATE` per batch, ids
///   de-duplicated and sorted first (Postgres refuses one key twice in one INSERT, and a
///   common lock order keeps concurrent batches from two replicas from deadlocking).
/// - Reads: `count(*)` over a range of the `last_seen_ms` index.
/// - Prune: small `DELETE`s by `ctid` that skip locked rows, so writers never queue behind it.
/// - Outages: every call has a deadline (``Configuration/operationTimeout``) and fails with
///   ``PresenceStoreError/Code-swift.struct/unavailable``; the pool reconnects by itself.
///
/// Call ``run()`` (or put the store in a `ServiceGroup`) before using it.
public final class PostgresPresenceStore: PresenceStore {
  public struct Configuration: Sendable {
    /// The postgres-nio pool configuration (host, credentials, TLS, pool size, timeouts).
    public var client: PostgresClient.Configuration
    /// The most one call may take, waiting for a connection included. Short, so that a
    /// caller (the gateway) learns of an outage quickly and retries with its own backoff.
    public var operationTimeout: Duration = .seconds(3)
    /// Rows per prune statement.
    public var pruneChunk: Int = 10_000
    /// Rows per upsert statement: a gateway's batch of 5,000 is 10 statements of ~3 ms of the
    /// backend's CPU each rather than one of ~30 ms (issue 12, `docs/benchmarks.md`).
    public var writeSlice: Int = 500
    /// The schema holding the tables (created if missing); `nil` uses the server's default
    /// search path (normally `public`). Lets tests, or several deployments, share a database.
    public private(set) var schema: String?

    /// Sets ``schema``; it must match `[a-z_][a-z0-9_]{0,62}` (it is spliced into SQL).
    public mutating func setSchema(_ schema: String?) throws(PresenceStoreError) {
      if let schema, !StoreURL.isPlainIdentifier(schema) {
        throw PresenceStoreError(
          code: .invalidConfiguration, message: "schema must match [a-z_][a-z0-9_]{0,62}")
      }
      self.schema = schema
    }

    public init(client: PostgresClient.Configuration) {
      self.client = client
    }

    /// Parses `postgres://user:password@host:port/database?sslmode=…&connect_timeout=…`.
    ///
    /// Query options: `sslmode` (`disable` — the default —, `prefer`, `require`),
    /// `connect_timeout` (seconds, default 2), `pool_max` (connections, default 10),
    /// `operation_timeout_ms` (default 3000), `schema` (see ``schema``).
    public init(url: String) throws(PresenceStoreError) {
      let parsed = try StoreURL.parsePostgres(url)
      var client = PostgresClient.Configuration(
        host: parsed.host, port: parsed.port, username: parsed.user, password: parsed.password,
        database: parsed.database, tls: .disable)
      switch parsed.sslMode {
      case .disable: client.tls = .disable
      case .prefer: client.tls = .prefer(.makeClientConfiguration())
      case .require: client.tls = .require(.makeClientConfiguration())
      }
      client.options.connectTimeout = parsed.connectTimeout
      client.options.maximumConnections = parsed.poolMax
      // A stuck statement must not hold a pooled connection forever (our deadline cannot
      // interrupt a statement already sent); the server enforces this one.
      client.options.additionalStartupParameters = [
        ("statement_timeout", "10000"), ("application_name", "tenten-status"),
      ]
      self.client = client
      self.operationTimeout = parsed.operationTimeout
      self.schema = parsed.schema
    }
  }

  /// Serializes schema migrations across replicas starting at once (any constant works; it
  /// only has to be the same for every replica).
  static let migrationLockKey: Int64 = 0x7465_6e74_656e_0001

  private let configuration: Configuration
  private let client: PostgresClient
  private let logger: Logger
  /// Whether this instance has checked and migrated the schema. Tried in `run()` and again
  /// lazily by the first call if the database was down at start.
  private let schemaReady = Mutex(false)

  public init(configuration: Configuration, logger: Logger) {
    self.configuration = configuration
    self.logger = logger
    var client = configuration.client
    if let schema = configuration.schema {
      // Every pooled connection starts with the schema first on its search path, so the
      // statements below need no qualification.
      client.options.additionalStartupParameters.append(("search_path", schema))
    }
    self.client = PostgresClient(configuration: client, backgroundLogger: logger)
  }

  /// Runs the connection pool until cancelled or until graceful shutdown; migrates the
  /// schema as soon as the database answers. Call it exactly once per instance.
  public func run() async {
    await withDiscardingTaskGroup { group in
      group.addTask { await self.client.run() }
      group.addTask {
        // Eager migration, so schema problems show in the log at start and the first
        // request is not the one to pay for it. Retries until it works or shutdown.
        var delay = Duration.milliseconds(200)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
          do {
            try await self.ensureSchema()
            return
          } catch {
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            // A warning: the service cannot answer until the database does (calls fail with
            // UNAVAILABLE meanwhile), and an operator must see why; it recovers by itself.
            self.logger.warning(
              "presence schema migration failed; retrying",
              metadata: ["error": "\(error)"])
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
          }
        }
      }
    }
  }

  public func record(_ records: [PresenceRecord]) async throws {
    guard !records.isEmpty else { return }
    // Dedupe (max per id), then sort by id: see the type's documentation.
    let latest = Dictionary(
      records.lazy.map { ($0.userID, $0.lastSeenMillis) }, uniquingKeysWith: max)
    let sorted = latest.sorted { $0.key < $1.key }
    let slice = configuration.writeSlice
    try await perform("record") { connection, logger in
      // One statement per slice, in id order: each is a few ms of the backend's CPU, and
      // between two the backend waits for the next, so its core goes to whoever is queued
      // on it (the threads that serve reads) instead of to one statement of ~30 ms. Each
      // slice commits by itself: a batch that fails half-way is retried whole, and the
      // slices already stored are no-ops then (max wins).
      for start in stride(from: 0, to: sorted.count, by: slice) {
        let part = sorted[start..<min(start + slice, sorted.count)]
        let ids = part.map(\.key)
        let timestamps = part.map(\.value)
        _ = try await connection.query(
          """
          INSERT INTO presence (user_id, last_seen_ms)
          SELECT * FROM UNNEST(\(ids)::text[], \(timestamps)::bigint[])
          ON CONFLICT (user_id) DO UPDATE SET last_seen_ms = EXCLUDED.last_seen_ms
          WHERE presence.last_seen_ms < EXCLUDED.last_seen_ms
          """, logger: logger)
      }
    }
  }

  public func countOnline(sinceMillis: Int64) async throws -> UInt64 {
    try await perform("count") { connection, logger in
      let rows = try await connection.query(
        "SELECT count(*) FROM presence WHERE last_seen_ms >= \(sinceMillis)", logger: logger)
      return UInt64(try await Self.count(rows))
    }
  }

  public func prune(beforeMillis: Int64) async throws -> Int {
    var total = 0
    let chunk = configuration.pruneChunk
    while true {
      try Task.checkCancellation()
      // Each chunk is its own short statement. SKIP LOCKED: rows a writer is upserting
      // right now are left for the next prune instead of making either side wait. The
      // outer predicate is re-checked on a concurrently updated row, so a user who came
      // back online meanwhile is never deleted.
      let deleted = try await perform("prune") { connection, logger in
        let rows = try await connection.query(
          """
          WITH doomed AS (
            DELETE FROM presence WHERE ctid IN (
              SELECT ctid FROM presence WHERE last_seen_ms < \(beforeMillis)
              LIMIT \(chunk) FOR UPDATE SKIP LOCKED)
            AND last_seen_ms < \(beforeMillis)
            RETURNING 1)
          SELECT count(*) FROM doomed
          """, logger: logger)
        return Int(try await Self.count(rows))
      }
      total += deleted
      if deleted < chunk { break }
    }
    if total > 0 {
      logger.debug("pruned presence", metadata: ["presence.pruned": "\(total)"])
    }
    return total
  }

  /// The value of a `SELECT count(*)`: its one row's one column.
  private static func count(_ rows: PostgresRowSequence) async throws -> Int64 {
    var count: Int64 = 0
    for try await value in rows.decode(Int64.self) {
      count = value
    }
    return count
  }

  // MARK: Schema

  /// Schema versions, applied in order, each once (recorded in `presence_schema`).
  private static let migrations: [String] = [
    // v1. Fill factor below 100 leaves room on each page for the new row versions that
    // every upsert creates; autovacuum runs more often than the default because the table
    // is rewritten about once per user per second.
    """
    CREATE TABLE IF NOT EXISTS presence (
      user_id TEXT PRIMARY KEY,
      last_seen_ms BIGINT NOT NULL
    ) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
    CREATE INDEX IF NOT EXISTS presence_last_seen_ms ON presence (last_seen_ms);
    """
  ]

  /// The whole migration as one `DO` statement: it runs in one implicit transaction, so it
  /// applies entirely or not at all, and the advisory lock (held to its end) serializes
  /// replicas that start together (`CREATE TABLE IF NOT EXISTS` is not safe against a
  /// concurrent create). The lock is per schema: deployments (or tests) in other schemas of
  /// the same database share no tables, so they do not wait for each other. One statement also means no explicit BEGIN/ROLLBACK to send on a
  /// connection that may just have been closed under us.
  static func migrationSQL(schema: String?) -> String {
    var steps = ""
    for (index, sql) in migrations.enumerated() {
      steps += """
          IF current < \(index + 1) THEN
            \(sql)
            INSERT INTO presence_schema (version) VALUES (\(index + 1));
          END IF;

        """
    }
    let createSchema = schema.map { "CREATE SCHEMA IF NOT EXISTS \($0);" } ?? ""
    // `schema` is a validated identifier (see Configuration); without one, tables go to the
    // first schema of the search path.
    let lockScope = schema.map { "'\($0)'" } ?? "current_schema()"
    return """
      DO $migration$
      DECLARE current INT;
      BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(\(lockScope), \(migrationLockKey)));
        \(createSchema)
        CREATE TABLE IF NOT EXISTS presence_schema (
          version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
        SELECT coalesce(max(version), 0) INTO current FROM presence_schema;
      \(steps)END
      $migration$
      """
  }

  private func ensureSchema() async throws {
    if schemaReady.withLock({ $0 }) { return }
    let sql = Self.migrationSQL(schema: configuration.schema)
    try await withLeasedConnection("migrate") { connection, logger in
      _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
    }
    let first = schemaReady.withLock { ready in
      defer { ready = true }
      return !ready
    }
    if first {
      logger.debug(
        "presence schema ready",
        metadata: ["presence.schema_version": "\(Self.migrations.count)"])
    }
  }

  // MARK: Errors and deadlines

  private func perform<T: Sendable>(
    _ operation: String,
    _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    try await ensureSchema()
    return try await withLeasedConnection(operation, body)
  }

  /// Runs `body` on a pooled connection, under the operation deadline.
  private func withLeasedConnection<T: Sendable>(
    _ operation: String,
    _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
  ) async throws -> T {
    try await withOperationDeadline(operation) {
      try await self.client.withConnection { connection in
        // Right after the server closes a connection (restart), the pool can still hand it
        // out for an instant, and postgres-nio never answers a query written to a closed
        // channel (the write is dropped), so the call would hang past any deadline. Refuse
        // it instead: the pool replaces it, the caller retries.
        guard !connection.isClosed else {
          throw PresenceStoreError(
            code: .unavailable, message: "PostgreSQL \(operation): connection closed")
        }
        return try await body(connection, self.logger)
      }
    }
  }

  /// Runs `body` with the configured deadline and maps every failure to a
  /// ``PresenceStoreError``. A caller's own cancellation stays a `CancellationError`.
  private func withOperationDeadline<T: Sendable>(
    _ operation: String, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let timeout = configuration.operationTimeout
    do {
      return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
          try await Task.sleep(for: timeout)
          return nil
        }
        // The first child to finish decides; the other is cancelled (a pending
        // connection lease is withdrawn from the pool at once).
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
          throw PresenceStoreError(
            code: .unavailable,
            message: "PostgreSQL \(operation) did not finish within \(timeout)")
        }
        return value
      }
    } catch let error as PresenceStoreError {
      throw error
    } catch let error as CancellationError {
      throw error
    } catch {
      if Task.isCancelled { throw CancellationError() }
      throw Self.map(error, operation: operation)
    }
  }

  static func map(_ error: any Error, operation: String) -> PresenceStoreError {
    if let error = error as? PSQLError {
      if error.code == .server {
        let state = error.serverInfo?[.sqlState] ?? ""
        let message = error.serverInfo?[.message] ?? ""
        // 08: connection exception, 57P0x: shutting down / cannot connect now,
        // 53: insufficient resources, 40001/40P01: serialization failure / deadlock.
        let transient =
          state.hasPrefix("08") || state.hasPrefix("57P") || state.hasPrefix("53")
          || state == "40001" || state == "40P01"
        return PresenceStoreError(
          code: transient ? .unavailable : .storageFailure,
          message: "PostgreSQL \(operation) failed: \(state) \(message)", cause: error)
      }
      return PresenceStoreError(
        code: .unavailable, message: "PostgreSQL \(operation) failed: \(error.code)",
        cause: error)
    }
    if let error = error as? PostgresTransactionError {
      return PresenceStoreError(
        code: .unavailable, message: "PostgreSQL \(operation) failed in a transaction",
        cause: error)
    }
    // Pool errors (shut down, circuit breaker tripped) and channel errors: all transient.
    return PresenceStoreError(
      code: .unavailable, message: "PostgreSQL \(operation) failed: \(error)",
      cause: error)
  }
}
