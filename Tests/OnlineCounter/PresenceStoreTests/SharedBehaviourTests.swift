import Foundation
import PresenceStore
import TestSupport
import Testing

/// The contract of ``PresenceStore``, checked against every implementation: each behaviour
/// below runs once per store kind, in a suite of that kind's own, so that a kind that cannot
/// run here (PostgreSQL without `POSTGRES_URL`) shows as skipped.
@Suite("PresenceStore shared behaviour")
struct SharedBehaviourTests {
  @Suite("SQLite") struct SQLite {
    @Test(arguments: Behaviour.all) func behaves(_ behaviour: Behaviour) async throws {
      try await withLocation(.sqlite, behaviour.check)
    }
  }

  @Suite("PostgreSQL", .requires(.postgres)) struct PostgreSQL {
    @Test(arguments: Behaviour.all) func behaves(_ behaviour: Behaviour) async throws {
      try await withLocation(.postgres, behaviour.check)
    }
  }

  /// One behaviour of the contract, as a test argument.
  struct Behaviour: Sendable, CustomTestStringConvertible {
    let name: String
    let check: @Sendable (StoreLocation) async throws -> Void
    var testDescription: String { name }

    static let all: [Behaviour] = [
      .init(name: "emptyStoreCountsZero", check: SharedBehaviourTests.emptyStoreCountsZero),
      .init(name: "replayingABatchIsIdempotent", check: SharedBehaviourTests.replayingABatchIsIdempotent),
      .init(name: "outOfOrderBatchesKeepTheMaximum", check: SharedBehaviourTests.outOfOrderBatchesKeepTheMaximum),
      .init(name: "countWindowIncludesItsStart", check: SharedBehaviourTests.countWindowIncludesItsStart),
      .init(name: "duplicateIDsWithinOneBatch", check: SharedBehaviourTests.duplicateIDsWithinOneBatch),
      .init(name: "pruneDeletesOnlyOlderUsers", check: SharedBehaviourTests.pruneDeletesOnlyOlderUsers),
      .init(name: "largeBatchesAndChunkedPrune", check: SharedBehaviourTests.largeBatchesAndChunkedPrune),
      .init(name: "dataSurvivesReopening", check: SharedBehaviourTests.dataSurvivesReopening),
      .init(name: "concurrentWritersConverge", check: SharedBehaviourTests.concurrentWritersConverge),
      .init(name: "cachedCountsAreSingleFlightAndShowTheirWritesSoon", check: SharedBehaviourTests.cachedCountsAreSingleFlightAndShowTheirWritesSoon)
    ]
  }

  static let t0: Int64 = 1_790_000_000_000

  static func records(_ pairs: [(String, Int64)]) -> [PresenceRecord] {
    pairs.map { PresenceRecord(userID: $0.0, lastSeenMillis: $0.1) }
  }

  static func emptyStoreCountsZero(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      #expect(try await store.countOnline(sinceMillis: 0) == 0)
      try await store.record([])
      #expect(try await store.prune(beforeMillis: .max) == 0)
    }
  }

  static func replayingABatchIsIdempotent(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      let batch = Self.records([("a", Self.t0), ("b", Self.t0 + 10), ("c", Self.t0 + 20)])
      try await store.record(batch)
      try await store.record(batch)
      try await store.record(batch)
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 3)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 10) == 2)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 21) == 0)
    }
  }

  static func outOfOrderBatchesKeepTheMaximum(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      // Newer first, then an older batch arrives late (a gateway retrying).
      try await store.record(Self.records([("a", Self.t0 + 1_000), ("b", Self.t0 + 500)]))
      try await store.record(Self.records([("a", Self.t0), ("b", Self.t0 + 900)]))
      // a keeps t0+1000 (the late, older value lost); b moved up to t0+900 (max wins).
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 1_000) == 1)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 900) == 2)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 901) == 1)
      // Either order of the same two batches gives the same state.
      try await store.record(Self.records([("x", Self.t0), ("y", Self.t0 + 900)]))
      try await store.record(Self.records([("x", Self.t0 + 1_000), ("y", Self.t0 + 500)]))
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 1_000) == 2)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 900) == 4)
    }
  }

  static func countWindowIncludesItsStart(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      try await store.record(Self.records([("edge", Self.t0), ("after", Self.t0 + 1)]))
      #expect(try await store.countOnline(sinceMillis: Self.t0 - 1) == 2)
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 2)  // >= since
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 1) == 1)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 2) == 0)
    }
  }

  static func duplicateIDsWithinOneBatch(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      // PostgreSQL refuses one key twice in an INSERT … ON CONFLICT; the store must not.
      try await store.record(
        Self.records([
          ("dup", Self.t0), ("dup", Self.t0 + 300), ("dup", Self.t0 + 100), ("solo", Self.t0),
        ]))
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 2)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 300) == 1)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 301) == 0)
    }
  }

  static func pruneDeletesOnlyOlderUsers(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      let old = (0..<25).map { PresenceRecord(userID: "old-\($0)", lastSeenMillis: Self.t0) }
      let fresh = (0..<5).map {
        PresenceRecord(userID: "fresh-\($0)", lastSeenMillis: Self.t0 + 10)
      }
      try await store.record(old + fresh)
      #expect(try await store.prune(beforeMillis: Self.t0) == 0)  // strictly before
      #expect(try await store.prune(beforeMillis: Self.t0 + 10) == 25)
      #expect(try await store.prune(beforeMillis: Self.t0 + 10) == 0)
      #expect(try await store.countOnline(sinceMillis: 0) == 5)
      // A pruned user that comes back is counted again.
      try await store.record(Self.records([("old-1", Self.t0 + 20)]))
      #expect(try await store.countOnline(sinceMillis: 0) == 6)
    }
  }

  static func largeBatchesAndChunkedPrune(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      // 10k per batch (the gateway's flush size at scale); 25k in all so that prune runs
      // several chunks in both stores.
      for batch in 0..<3 {
        let count = batch == 2 ? 5_000 : 10_000
        let records = (0..<count).map {
          PresenceRecord(
            userID: "user-\(batch)-\($0)", lastSeenMillis: Self.t0 + Int64($0 % 1_000))
        }
        try await store.record(records)
      }
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 25_000)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 500) == 12_500)
      #expect(try await store.prune(beforeMillis: Self.t0 + 500) == 12_500)
      #expect(try await store.countOnline(sinceMillis: 0) == 12_500)
    }
  }

  static func dataSurvivesReopening(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      try await store.record(Self.records([("a", Self.t0), ("b", Self.t0 + 5)]))
    }
    // A new store instance (SQLite: the file reopened; PostgreSQL: a new pool).
    try await location.withStore { store in
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 2)
      try await store.record(Self.records([("a", Self.t0 - 100)]))  // still max wins
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 1) == 1)
    }
  }

  static func concurrentWritersConverge(_ location: StoreLocation) async throws {
    try await location.withStore { store in
      // Overlapping batches from "several replicas" at once, in different orders: no
      // deadlock, no lost update, max wins.
      try await withThrowingTaskGroup(of: Void.self) { group in
        for writer in 0..<8 {
          group.addTask {
            var records = (0..<500).map {
              PresenceRecord(userID: "u\($0)", lastSeenMillis: Self.t0 + Int64(writer))
            }
            if writer % 2 == 1 { records.reverse() }
            try await store.record(records)
          }
        }
        try await group.waitForAll()
      }
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 500)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 7) == 500)
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 8) == 0)
    }
  }

  static func cachedCountsAreSingleFlightAndShowTheirWritesSoon(_ location: StoreLocation) async throws {
    try await location.withStore(cacheMaxAge: .seconds(30)) { store in
      let cached = try #require(store as? CachedPresenceStore)
      try await store.record(Self.records([("a", Self.t0), ("b", Self.t0)]))
      let counts = try await withThrowingTaskGroup(of: UInt64.self) { group in
        for _ in 0..<100 {
          group.addTask { try await store.countOnline(sinceMillis: Self.t0) }
        }
        return try await group.reduce(into: [UInt64]()) { $0.append($1) }
      }
      #expect(counts == Array(repeating: 2, count: 100))
      #expect(cached.cache.queryCount == 1)
      // A write through this store marks the count stale: it is still served (within the
      // 30 s max age) while the store's refresher (run by the harness) queries again, once.
      try await store.record(Self.records([("c", Self.t0)]))
      let deadline = ContinuousClock.now + .seconds(5)
      var count = try await store.countOnline(sinceMillis: Self.t0)
      #expect(count == 2 || count == 3)
      while count != 3, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(5))
        count = try await store.countOnline(sinceMillis: Self.t0)
      }
      #expect(count == 3)
      #expect(cached.cache.queryCount == 2)
      // A window far from the cached one is not served from the cache.
      #expect(try await store.countOnline(sinceMillis: Self.t0 + 60_000) == 0)
      #expect(cached.cache.queryCount == 3)
    }
  }
}
