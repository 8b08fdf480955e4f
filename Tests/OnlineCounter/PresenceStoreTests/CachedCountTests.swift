import PresenceStore
import Synchronization
import TestSupport
import Testing

/// A fetch whose calls the test can count and hold open.
final class GatedFetch: Sendable {
  private let calls = Mutex<[Int64]>([])
  private let isOpen = Mutex(false)
  let answer: UInt64

  init(answer: UInt64) {
    self.answer = answer
  }

  var sinceValues: [Int64] { calls.withLock { $0 } }

  /// Lets every pending and future call finish.
  func release() { isOpen.withLock { $0 = true } }

  func fetch(_ since: Int64) async throws -> UInt64 {
    calls.withLock { $0.append(since) }
    // Polling keeps the gate trivially correct for many waiters and for cancellation
    // (Task.sleep throws when the caller is cancelled).
    while !isOpen.withLock({ $0 }) {
      try await Task.sleep(for: .milliseconds(2))
    }
    return answer
  }
}

@Suite("CachedCount")
struct CachedCountTests {
  @Test func concurrentCallersShareOneQuery() async throws {
    let fetch = GatedFetch(answer: 7)
    let cache = CachedCount(maxAge: .seconds(60)) { try await fetch.fetch($0) }
    try await withThrowingTaskGroup(of: UInt64.self) { group in
      for offset in 0..<50 {
        group.addTask { try await cache.count(sinceMillis: 1_000 + Int64(offset)) }
      }
      // Wait until the one query is in flight, then let it answer.
      while fetch.sinceValues.isEmpty { await Task.yield() }
      fetch.release()
      for try await value in group { #expect(value == 7) }
    }
    #expect(fetch.sinceValues.count == 1)
    #expect(cache.queryCount == 1)
  }

  /// On a clock the test moves: the answer is served up to exactly `maxAge`, and not after.
  @Test func answerExpiresAfterMaxAge() async throws {
    let fetch = GatedFetch(answer: 1)
    fetch.release()
    let start = ContinuousClock.now
    let elapsed = Mutex(Duration.zero)
    let cache = CachedCount(maxAge: .milliseconds(500), now: { start + elapsed.withLock { $0 } }) {
      try await fetch.fetch($0)
    }
    _ = try await cache.count(sinceMillis: 0)
    elapsed.withLock { $0 = .milliseconds(500) }
    _ = try await cache.count(sinceMillis: 0)
    #expect(cache.queryCount == 1)
    elapsed.withLock { $0 = .milliseconds(501) }
    _ = try await cache.count(sinceMillis: 0)
    #expect(cache.queryCount == 2)
  }

  @Test func distantWindowIsNotServedFromCache() async throws {
    let fetch = GatedFetch(answer: 1)
    fetch.release()
    let cache = CachedCount(maxAge: .seconds(1)) { try await fetch.fetch($0) }
    _ = try await cache.count(sinceMillis: 10_000)
    _ = try await cache.count(sinceMillis: 11_000)  // within 1 s: reused
    _ = try await cache.count(sinceMillis: 9_000)  // within 1 s: reused
    #expect(cache.queryCount == 1)
    _ = try await cache.count(sinceMillis: 11_001)  // an injected clock jumped: fresh
    #expect(fetch.sinceValues == [10_000, 11_001])
  }

  @Test func invalidateKeepsServingTheAnswerWithoutARefresher() async throws {
    let fetch = GatedFetch(answer: 1)
    fetch.release()
    let cache = CachedCount(maxAge: .seconds(60)) { try await fetch.fetch($0) }
    _ = try await cache.count(sinceMillis: 0)
    cache.invalidate()
    #expect(try await cache.count(sinceMillis: 0) == 1)
    #expect(cache.queryCount == 1)
  }

  /// After a write, readers get the previous answer at once while the refresher runs one new
  /// query; its answer then serves everyone, with no further query.
  @Test func theRefresherRenewsAStaleAnswerOnce() async throws {
    let cache = CachedCount(maxAge: .seconds(60), fetch: Self.oneMoreEachTime())
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { await cache.refreshAhead(interval: .milliseconds(10)) }
      defer { group.cancelAll() }
      #expect(try await cache.count(sinceMillis: 0) == 1)
      // Fresh and not written since: served, nothing refreshed.
      #expect(try await cache.count(sinceMillis: 0) == 1)
      cache.invalidate()
      #expect(try await cache.count(sinceMillis: 0) == 1)
      try await Self.waitForCount(2, from: cache)
      for _ in 0..<20 {
        #expect(try await cache.count(sinceMillis: 0) == 2)
        try await Task.sleep(for: .milliseconds(2))
      }
      #expect(cache.queryCount == 2)
    }
  }

  /// An answer past half its max age is still served, and refreshed ahead of its expiry.
  @Test func aHalfExpiredAnswerIsRefreshedAhead() async throws {
    let start = ContinuousClock.now
    let elapsed = Mutex(Duration.zero)
    let cache = CachedCount(
      maxAge: .seconds(10), now: { start + elapsed.withLock { $0 } }, fetch: Self.oneMoreEachTime())
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { await cache.refreshAhead(interval: .milliseconds(10)) }
      defer { group.cancelAll() }
      #expect(try await cache.count(sinceMillis: 0) == 1)
      elapsed.withLock { $0 = .seconds(4) }
      #expect(try await cache.count(sinceMillis: 0) == 1)
      #expect(cache.queryCount == 1)
      elapsed.withLock { $0 = .seconds(6) }
      #expect(try await cache.count(sinceMillis: 0) == 1)
      try await Self.waitForCount(2, from: cache)
    }
  }

  /// What an event loop may answer from: the answer `count` would return at once, never a
  /// wait; `nil` before the first answer, after it expired, and for a distant window.
  @Test func cachedCountNeverWaits() async throws {
    let start = ContinuousClock.now
    let elapsed = Mutex(Duration.zero)
    let cache = CachedCount(
      maxAge: .seconds(10), now: { start + elapsed.withLock { $0 } }, fetch: Self.oneMoreEachTime())
    #expect(cache.cachedCount(sinceMillis: 0) == nil)
    #expect(cache.queryCount == 0)
    #expect(try await cache.count(sinceMillis: 0) == 1)
    #expect(cache.cachedCount(sinceMillis: 0) == 1)
    #expect(cache.cachedCount(sinceMillis: 10_001) == nil)
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await cache.refreshAhead(interval: .milliseconds(10)) }
      defer { group.cancelAll() }
      // Written since: still served, and the refresher renews it.
      cache.invalidate()
      #expect(cache.cachedCount(sinceMillis: 0) == 1)
      // The refresher runs every 10 ms: 5 s is 500 of its rounds, a bound for a starved
      // host, not a latency claim.
      #expect(
        await eventually(timeout: .seconds(5), interval: .milliseconds(2)) {
          cache.cachedCount(sinceMillis: 0) == 2
        })
    }
    elapsed.withLock { $0 = .seconds(11) }
    #expect(cache.cachedCount(sinceMillis: 0) == nil)
    #expect(cache.queryCount == 2)
  }

  /// A fetch answering 1, 2, 3, … : each answer tells which query it came from.
  static func oneMoreEachTime() -> CachedCount.Fetch {
    let answers = Mutex<UInt64>(0)
    return { _ in
      answers.withLock { value in
        value += 1
        return value
      }
    }
  }

  static func waitForCount(_ expected: UInt64, from cache: CachedCount) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while try await cache.count(sinceMillis: 0) != expected, ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(2))
    }
    #expect(try await cache.count(sinceMillis: 0) == expected)
  }

  @Test func errorsReachEveryWaiterAndAreNotCached() async throws {
    struct Boom: Error {}
    let calls = Mutex(0)
    let cache = CachedCount(maxAge: .seconds(60)) { _ in
      calls.withLock { $0 += 1 }
      throw Boom()
    }
    await #expect(throws: Boom.self) { try await cache.count(sinceMillis: 0) }
    await #expect(throws: Boom.self) { try await cache.count(sinceMillis: 0) }
    #expect(calls.withLock { $0 } == 2)
  }

  @Test func cancelledWaiterLeavesTheOthersAnswered() async throws {
    let fetch = GatedFetch(answer: 3)
    let cache = CachedCount(maxAge: .seconds(60)) { try await fetch.fetch($0) }
    try await withThrowingTaskGroup(of: Void.self) { group in
      // The leader.
      group.addTask {
        let value = try await cache.count(sinceMillis: 0)
        #expect(value == 3)
      }
      while fetch.sinceValues.isEmpty { await Task.yield() }
      // A waiter that gives up: its cancellation must end it promptly.
      let quitter = Task { try await cache.count(sinceMillis: 0) }
      quitter.cancel()
      await #expect(throws: CancellationError.self) { try await quitter.value }
      // Another waiter still gets the shared answer.
      group.addTask {
        let value = try await cache.count(sinceMillis: 0)
        #expect(value == 3)
      }
      fetch.release()
      try await group.waitForAll()
    }
    #expect(cache.queryCount == 1)
  }

  @Test func cancelledLeaderHandsOverToAWaiter() async throws {
    let fetch = GatedFetch(answer: 5)
    let cache = CachedCount(maxAge: .seconds(60)) { try await fetch.fetch($0) }
    let leader = Task { try await cache.count(sinceMillis: 0) }
    while fetch.sinceValues.isEmpty { await Task.yield() }
    let waiter = Task { try await cache.count(sinceMillis: 0) }
    // Give the waiter time to join the leader's flight (if it has not, it simply leads).
    try await Task.sleep(for: .milliseconds(50))
    leader.cancel()
    // The leader's fetch saw its cancellation; the waiter must not inherit that error: it
    // retries and leads a new query.
    await #expect(throws: CancellationError.self) { try await leader.value }
    fetch.release()
    #expect(try await waiter.value == 5)
    #expect(cache.queryCount == 2)
  }
}
