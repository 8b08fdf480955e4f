import Foundation
import Logging
import PostgresNIO
import PresenceStore
import TestSupport
import Testing

/// The stores the shared suite runs against.
enum StoreKind: String, Sendable {
  case sqlite, postgres
}

/// Silent unless PRESENCE_TEST_LOG is set (then debug logs go to stderr, for diagnosis).
let quietLogger: Logger = {
  guard ProcessInfo.processInfo.environment["PRESENCE_TEST_LOG"] != nil else {
    return Logger(label: "presence-store-tests", factory: { _ in SwiftLogNoOpLogHandler() })
  }
  var logger = Logger(
    label: "presence-store-tests", factory: { StreamLogHandler.standardError(label: $0) })
  logger.logLevel = .trace
  return logger
}()

/// Appends query options to a URL that may already have some.
func adding(_ options: String, to url: String) -> String {
  url + (url.contains("?") ? "&" : "?") + options
}

/// One isolated place to keep presence: a temporary SQLite file, or a fresh schema in the
/// test database. `open()` can be called again to get a new store over the same data
/// (persistence across reopen).
struct StoreLocation: Sendable {
  let kind: StoreKind
  let url: String
  let cleanup: @Sendable () async -> Void

  /// A fresh location; PostgreSQL ones need `POSTGRES_URL` (gate such tests with
  /// `.requires(.postgres)`).
  static func make(_ kind: StoreKind) throws -> StoreLocation {
    switch kind {
    case .sqlite:
      let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("presence-tests-\(UUID().uuidString)")
      let path = directory.appendingPathComponent("nested/presence.sqlite").path
      return StoreLocation(kind: kind, url: "sqlite:\(path)") {
        try? FileManager.default.removeItem(at: directory)
      }
    case .postgres:
      let base = try #require(TestEnvironment.postgresURL, Requirement.postgres.reason)
      let schema = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
      // A failing test should fail on its checks, not on a statement deadline that a loaded
      // machine running many tests against one server can exceed (production keeps 3 s).
      let url = adding("schema=\(schema)&operation_timeout_ms=15000", to: base)
      return StoreLocation(kind: kind, url: url) {
        await dropSchema(schema, base: base)
      }
    }
  }

  /// Opens a store here and runs `body` while the store runs.
  func withStore<T: Sendable>(
    cacheMaxAge: Duration? = nil,
    _ body: @Sendable (any PresenceStore) async throws -> T
  ) async throws -> T {
    let store = try await makePresenceStore(
      url: url, logger: quietLogger, countCacheMaxAge: cacheMaxAge)
    return try await running(store, body)
  }
}

/// Runs `store` in a child task for the duration of `body`, as a ServiceGroup would.
func running<T: Sendable>(
  _ store: any PresenceStore, _ body: @Sendable (any PresenceStore) async throws -> T
) async throws -> T {
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await store.run() }
    defer { group.cancelAll() }
    return try await body(store)
  }
}

/// Best-effort removal of a test schema, straight through postgres-nio (opening a store on
/// the base URL would create tables in the default schema).
func dropSchema(_ schema: String, base: String) async {
  guard let configuration = try? PostgresPresenceStore.Configuration(url: base) else { return }
  let client = PostgresClient(configuration: configuration.client)
  await withTaskGroup(of: Void.self) { group in
    group.addTask { await client.run() }
    group.addTask {
      _ = try? await client.query(
        PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE"))
    }
    group.addTask { try? await Task.sleep(for: .seconds(5)) }
    // The drop or the time limit, whichever comes first (run() only ends when cancelled).
    _ = await group.next()
    group.cancelAll()
  }
}

/// Runs `body` with a fresh location of `kind`, removing it afterwards.
func withLocation(
  _ kind: StoreKind, _ body: (StoreLocation) async throws -> Void
) async throws {
  let location = try StoreLocation.make(kind)
  do {
    try await body(location)
  } catch {
    await location.cleanup()
    throw error
  }
  await location.cleanup()
}
