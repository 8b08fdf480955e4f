import CounterModel
import CounterStatus
import Foundation
import InMemoryTracing
import ServiceKit
import Synchronization
import TestSupport
import Testing

@Suite struct StatusTests {
  @Test func windowIncludesExactly180Seconds() async throws {
    let now = Mutex<Int64>(1_800_000_000_000)
    let clock: MillisClock = { now.withLock { $0 } }
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL(), clock: clock) {
      address, reader in
      let seen = now.withLock { $0 }
      let response = try await Harness.report([("alice", seen)], to: address)
      #expect(response.accepted == 1)
      now.withLock { $0 = seen + 180_000 }
      #expect(try await reader.onlineUsers() == 1)
      #expect(try await Harness.fetchCount(from: address) == 1)
      now.withLock { $0 = seen + 180_001 }
      #expect(try await reader.onlineUsers() == 0)
      #expect(try await Harness.fetchCount(from: address) == 0)
    }
  }

  @Test func ingestIsIdempotentAndRefusesBadRecords() async throws {
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL()) { address, reader in
      let now = systemMillisClock()
      let first = try await Harness.report(
        [
          ("a", now), ("b", now - 1_000),
          ("future", now + 60_000),  // clock far ahead: refused
          ("bad id!", now), ("", now),
        ], to: address)
      #expect(first.accepted == 2)
      #expect(first.rejected == 3)
      // Replayed and out of order: an older timestamp must not move "a" back.
      _ = try await Harness.report([("a", now - 200_000), ("b", now - 1_000)], to: address)
      #expect(try await reader.onlineUsers() == 2)
    }
  }

  /// With the count cache, a cached count is answered on the event loop (CachedFetchHandler),
  /// a count that must wait for a query by grpc-swift's StatusReader, and other methods pass
  /// through untouched: every answer is the exact count.
  @Test func cachedCountsAreAnsweredOnTheEventLoop() async throws {
    let tracer = InMemoryTracer()
    try await Harness.withStatus(
      storeURL: Harness.temporaryStoreURL(), tracer: tracer, countCache: .seconds(1)
    ) { address, _ in
      let now = systemMillisClock()
      _ = try await Harness.report([("u1", now), ("u2", now), ("u3", now)], to: address)
      // Nothing cached yet: the first call waits for the query, through grpc-swift.
      #expect(try await Harness.fetchCount(from: address) == 3)
      // Then the cached answer, within its 1 s, on the event loop. 10 calls: if a slow
      // machine let the answer expire, a call goes through grpc-swift and still answers 3.
      for _ in 0..<10 {
        #expect(try await Harness.fetchCount(from: address) == 3)
      }
      #expect(try await HealthProbe.check(address).get() == .serving)
    }
    let reads = tracer.finishedSpans.filter { $0.operationName == "status.fetch_online_users" }
    let onLoop = reads.filter {
      $0.attributes["status.answered_on"]?.toSpanAttribute() == "event_loop"
    }
    #expect(reads.count == 11)
    #expect(!onLoop.isEmpty, "no call answered on the event loop")
    #expect(onLoop.allSatisfy { $0.attributes["presence.online_users"]?.toSpanAttribute() == 3 })
    // The first call's span is grpc-swift's, with the store read beneath it.
    #expect(reads.count(where: { $0.attributes["status.answered_on"] == nil }) >= 1)
    #expect(tracer.finishedSpans.contains { $0.operationName == "presence.store.read" })
  }

  @Test(arguments: [
    ("", false), ("a", true), (String(repeating: "x", count: 128), true),
    (String(repeating: "x", count: 129), false), ("user:1.2_3-4", true), ("with space", false),
    ("ünicode", false), ("semi;colon", false), ("slash/", false),
  ])
  func userIDRules(id: String, valid: Bool) {
    #expect((UserID.problem(with: id) == nil) == valid)
  }

  /// Regression: Latin-1 input was reported by its first UTF-8 byte ("byte 0xc3" for "é").
  @Test(arguments: [
    ("josé", "contains \"é\" (U+00E9) outside"), ("no spaces", "contains U+0020 outside"),
    ("bell\u{07}", "contains U+0007 outside"), ("a/b", "contains \"/\" (U+002F) outside"),
    ("rtl\u{202E}x", "contains U+202E outside"),
  ])
  func userIDProblemNamesTheCharacterAsTyped(id: String, expected: String) {
    let problem = UserID.problem(with: id)
    #expect(problem?.contains(expected) == true, "\(String(describing: problem))")
  }

  @Test(.requiresGRPCurl) func grpcurlReadsTheCountThroughReflection() async throws {
    let grpcurl = try #require(TestEnvironment.which("grpcurl"))
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL()) { address, _ in
      let now = systemMillisClock()
      _ = try await Harness.report([("u1", now), ("u2", now), ("u3", now)], to: address)
      let output = try await runProcess(
        grpcurl,
        [
          // A bound on a hung call, not a latency claim (10 s was hit once on a loaded host).
          "-max-time", "30", "-plaintext", "\(address)",
          "tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins",
        ], timeout: .seconds(60)
      ).output
      #expect(output.contains("\"onlineUsers\": \"3\""), "grpcurl printed: \(output)")
    }
  }

  /// `kill -9` of the real executable, then a restart on the same SQLite file.
  @Test(.requires(.product("status"))) func countSurvivesSIGKILLAndRestart() async throws {
    let store = Harness.temporaryStoreURL()
    let now = systemMillisClock()
    try await Harness.withStatusProcess(storeURL: store) { address, process in
      _ = try await Harness.report((0..<7).map { ("user-\($0)", now) }, to: address)
      #expect(try await Harness.fetchCount(from: address) == 7)
      await process.kill()
    }
    let restarted = try await Harness.withStatusProcess(storeURL: store) { address, _ in
      try await Harness.fetchCount(from: address)
    }
    #expect(restarted == 7)
  }
}
