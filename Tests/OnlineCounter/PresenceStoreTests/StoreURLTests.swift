import Logging
import PresenceStore
import Testing

@Suite("makePresenceStore URLs")
struct StoreURLTests {
  @Test(arguments: [
    "mysql://u:p@h/db", "", "sqlite:", "postgres://h/db", "postgres://u@/db",
    "postgres://u@h", "postgres://u@h/db?sslmode=sometimes", "postgres://u@h/db?pool_max=0",
    "postgres://u@h/db?schema=Bad-Name", "postgres://u@h/db?nonsense=1",
  ])
  func badURLsAreConfigurationErrors(url: String) async throws {
    do {
      _ = try await makePresenceStore(url: url, logger: quietLogger)
      Issue.record("accepted \(url)")
    } catch let error as PresenceStoreError {
      #expect(error.code == .invalidConfiguration)
    }
  }

  @Test func passwordsAreNotEchoedInErrors() async throws {
    do {
      _ = try await makePresenceStore(
        url: "postgres://user:s3cret@host/db?bogus=1", logger: quietLogger)
      Issue.record("accepted a bad option")
    } catch let error as PresenceStoreError {
      #expect(!error.description.contains("s3cret"))
    }
  }

  @Test func postgresURLsParse() throws {
    let configuration = try PostgresPresenceStore.Configuration(
      url: "postgresql://al%40ice:p%3Ass@db.example:6543/presence?sslmode=require"
        + "&connect_timeout=4&pool_max=3&operation_timeout_ms=750&schema=eu_1")
    #expect(configuration.client.host == "db.example")
    #expect(configuration.client.port == 6543)
    #expect(configuration.client.username == "al@ice")
    #expect(configuration.client.password == "p:ss")
    #expect(configuration.client.database == "presence")
    #expect(configuration.client.options.connectTimeout == .seconds(4))
    #expect(configuration.client.options.maximumConnections == 3)
    #expect(configuration.operationTimeout == .milliseconds(750))
    #expect(configuration.schema == "eu_1")
  }

  @Test func sqliteURLCreatesItsDirectory() async throws {
    try await withLocation(.sqlite) { location in
      try await location.withStore { store in
        #expect((store as? TracedPresenceStore)?.base is SQLitePresenceStore)
        try await store.record([PresenceRecord(userID: "a", lastSeenMillis: 1)])
      }
    }
  }
}
