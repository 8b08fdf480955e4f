import CounterModel
import CounterProtos
import Logging
import MetricsTestKit
import PresenceStore
import Synchronization
import Testing

@testable import CounterStatus

/// How status places records on its own clock, old-format records included (no network: the
/// ingest's validation and a store in memory).
@Suite struct PresenceIngestTests {
  static let now: Int64 = 1_800_000_000_000

  @Test func recordsArePlacedOnTheStatusClockAndSkewIsObserved() async throws {
    let store = MemoryStore()
    let metrics = TestMetrics()
    let ingest = PresenceIngest(
      store: store, clock: { Self.now }, logger: Harness.logger, metrics: metrics)
    // A gateway 30 s ahead that saw "a" 2 s and "b" 0 s before sending; "bad" has a negative
    // age.
    let gatewayNow = Self.now + 30_000
    let response = try await ingest.ingest(
      .with {
        $0.gatewayID = "g1"
        $0.records = [
          .with {
            $0.userID = "a"
            $0.seenAgoMs = 2_000
            $0.lastSeenUnixMs = gatewayNow - 2_000
          },
          .with {
            $0.userID = "b"
            $0.seenAgoMs = 0
            $0.lastSeenUnixMs = gatewayNow
          },
          .with {
            $0.userID = "bad"
            $0.seenAgoMs = -1
            $0.lastSeenUnixMs = gatewayNow
          },
        ]
      })
    #expect(response.accepted == 2 && response.rejected == 1)
    #expect(store.lastSeen == ["a": Self.now - 2_000, "b": Self.now])
    let skew = try metrics.expectGauge(
      "status_gateway_clock_skew_seconds", [("gateway", "g1")])
    #expect(skew.lastValue == 30)
  }

  /// A gateway that predates `seen_ago_ms`: its timestamps are used as they are, and refused
  /// when more than 5 s ahead, as before.
  @Test func oldFormatRecordsAreStillAccepted() async throws {
    let store = MemoryStore()
    let ingest = PresenceIngest(
      store: store, clock: { Self.now }, logger: Harness.logger, metrics: TestMetrics())
    let response = try await ingest.ingest(
      .with {
        $0.gatewayID = "old"
        $0.records = [("old", Self.now - 1_000), ("future", Self.now + 60_000)].map { id, ms in
          .with {
            $0.userID = id
            $0.lastSeenUnixMs = ms
          }
        }
      })
    #expect(response.accepted == 1 && response.rejected == 1)
    #expect(store.lastSeen == ["old": Self.now - 1_000])
  }
}

/// A presence store in memory: max per user.
private final class MemoryStore: PresenceStore {
  private let state = Mutex<[String: Int64]>([:])

  var lastSeen: [String: Int64] { state.withLock { $0 } }

  func record(_ records: [PresenceRecord]) async throws {
    state.withLock { state in
      for record in records {
        state[record.userID] = max(state[record.userID] ?? .min, record.lastSeenMillis)
      }
    }
  }

  func countOnline(sinceMillis: Int64) async throws -> UInt64 {
    state.withLock { UInt64($0.values.filter { $0 >= sinceMillis }.count) }
  }

  func prune(beforeMillis: Int64) async throws -> Int {
    state.withLock { state in
      let old = state.filter { $0.value < beforeMillis }.keys
      for key in old { state.removeValue(forKey: key) }
      return old.count
    }
  }
}
