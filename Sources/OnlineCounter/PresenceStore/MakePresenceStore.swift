internal import Foundation
public import Logging
public import Tracing

/// Opens the store that `url` names:
/// - `sqlite:PATH`: an embedded SQLite file (the parent directory is created);
/// - `postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=…&connect_timeout=…&pool_max=…
///   &operation_timeout_ms=…]` (or `postgresql://`): a shared PostgreSQL database.
///
/// The returned store must be run (see ``PresenceStore``): put it in the `ServiceGroup`
/// before the server that uses it. A PostgreSQL store does not connect here; a database that
/// is down at start shows as ``PresenceStoreError/Code-swift.struct/unavailable`` on the
/// first calls, and the store recovers by itself when it comes up.
///
/// - Parameter countCacheMaxAge: when set, ``PresenceStore/countOnline(sinceMillis:)`` is
///   served through a ``CachedPresenceStore`` (bursts of reads cost one query; at most this
///   stale across replicas; this process's own writes invalidate it).
/// - Parameter tracer: store reads and writes become spans (see ``TracedPresenceStore``); the
///   default is the process-wide tracer, a no-op unless tracing was bootstrapped.
/// - Throws: ``PresenceStoreError`` with code `invalidConfiguration` for a bad URL, or
///   `storageFailure` if the SQLite file cannot be opened.
public func makePresenceStore(
  url: String, logger: Logger, countCacheMaxAge: Duration? = nil,
  tracer: any Tracer = InstrumentationSystem.tracer
) async throws -> any PresenceStore {
  let base: any PresenceStore
  let system: String
  let lowercased = url.lowercased()
  if lowercased.hasPrefix("sqlite:") {
    let path = try StoreURL.parseSQLite(url)
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
    do {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw PresenceStoreError(
        code: .storageFailure, message: "cannot create directory \(directory)", cause: error)
    }
    base = try SQLitePresenceStore(path: path, logger: logger)
    system = "sqlite"
  } else if lowercased.hasPrefix("postgres://") || lowercased.hasPrefix("postgresql://") {
    let configuration = try PostgresPresenceStore.Configuration(url: url)
    base = PostgresPresenceStore(configuration: configuration, logger: logger)
    system = "postgresql"
  } else {
    throw StoreURL.invalid(url, "unknown scheme")
  }
  logger.info(
    "presence store configured", metadata: ["presence.store": "\(StoreURL.redacted(url))"])
  let traced = TracedPresenceStore(base: base, system: system, tracer: tracer)
  if let countCacheMaxAge {
    return CachedPresenceStore(base: traced, maxAge: countCacheMaxAge)
  }
  return traced
}
