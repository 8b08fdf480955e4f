import Foundation
import PresenceStore
import TestSupport
import Testing

@Suite("PostgreSQL outages")
struct PostgresOutageTests {
  static let t0: Int64 = 1_790_000_000_000

  @Test func unreachableDatabaseFailsFastAsUnavailable() async throws {
    let port = try freeLoopbackPort()
    let store = try await makePresenceStore(
      url: "postgres://u:p@127.0.0.1:\(port)/db?operation_timeout_ms=500&connect_timeout=1",
      logger: quietLogger)
    try await running(store) { store in
      let clock = ContinuousClock()
      let start = clock.now
      let error = await #expect(throws: PresenceStoreError.self) {
        try await store.countOnline(sinceMillis: 0)
      }
      #expect(error?.code == .unavailable)
      // Fails fast (operation timeout 500 ms) rather than hanging; the bound is loose so that
      // slow builds (ThreadSanitizer, a loaded CI host) do not make this a timing test.
      #expect(start.duration(to: clock.now) < .seconds(8))
    }
  }

  @Test(.requires(.postgresServer)) func recoversAfterTheServerRestarts() async throws {
    try await PrivateCluster.withCluster { cluster in
      try await Self.recoversAfterTheServerRestarts(cluster)
    }
  }

  private static func recoversAfterTheServerRestarts(_ cluster: PrivateCluster) async throws {
    let store = try await makePresenceStore(
      url: cluster.url + "?operation_timeout_ms=1000&connect_timeout=1", logger: quietLogger)
    try await running(store) { store in
      // The first call also migrates a brand-new cluster, which can take longer than the 1 s
      // operation deadline on a loaded host (seen once under stress-ng); that deadline is
      // short for the outage below, so the start is retried like the recovery.
      #expect(try await Self.recordUntilAvailable(store, "before"))
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 1)

      try await cluster.stop()
      // During the outage every call fails, quickly, with .unavailable.
      let clock = ContinuousClock()
      for _ in 0..<3 {
        let start = clock.now
        let error = await #expect(throws: PresenceStoreError.self) {
          try await store.record([PresenceRecord(userID: "during", lastSeenMillis: Self.t0)])
        }
        #expect(error?.code == .unavailable)
        // Fails fast (operation timeout 1 s) rather than hanging; the bound is loose so that
        // slow builds (ThreadSanitizer, a loaded CI host) do not make this a timing test.
        #expect(start.duration(to: clock.now) < .seconds(8))
      }

      try await cluster.start()
      // Back without any help: the pool reconnects on its own.
      #expect(try await Self.recordUntilAvailable(store, "after"))
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 2)
    }
  }

  /// Records `userID`, retrying every 200 ms while the store answers UNAVAILABLE; false if it
  /// still does after 20 s (a bound on a failing test, not a latency claim).
  private static func recordUntilAvailable(
    _ store: any PresenceStore, _ userID: String
  ) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: .seconds(20))
    while clock.now < deadline {
      do {
        try await store.record([PresenceRecord(userID: userID, lastSeenMillis: Self.t0)])
        return true
      } catch let error as PresenceStoreError where error.code == .unavailable {
        try await Task.sleep(for: .milliseconds(200))
      }
    }
    return false
  }
}
