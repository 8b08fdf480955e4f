import PresenceStore
import TestSupport
import Testing

/// PostgreSQL-only behaviour (the shared contract is in SharedBehaviourTests).
@Suite("PostgresPresenceStore")
struct PostgresStoreTests {
  @Test(.requires(.postgres)) func replicasStartingTogetherMigrateOnce() async throws {
    try await withLocation(.postgres) { location in
      // Four "replicas" create the same fresh schema at once: the advisory lock must
      // serialize them (CREATE TABLE IF NOT EXISTS alone can fail on a concurrent create).
      try await withThrowingTaskGroup(of: Void.self) { group in
        for replica in 0..<4 {
          group.addTask {
            try await location.withStore { store in
              try await store.record([
                PresenceRecord(userID: "replica-\(replica)", lastSeenMillis: 1_000)
              ])
            }
          }
        }
        try await group.waitForAll()
      }
      try await location.withStore { store in
        let count = try await store.countOnline(sinceMillis: 0)
        #expect(count == 4)
      }
    }
  }
}
