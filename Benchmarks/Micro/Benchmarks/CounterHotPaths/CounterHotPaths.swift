// The online counter's hot paths, with allocation counts (package-benchmark). What is here is
// what the main package's public API reaches: the gateway's pong record (PresenceReporter),
// the status side's batch upsert (SQLite always, PostgreSQL when POSTGRES_URL is set) and the
// count cache's hit. The ping tick (PingScheduler) and the per-stream pong path
// (ClientSession) are internal to CounterGateway, so they are not benchmarked here.
import Benchmark
import CounterGateway
import Foundation
import Logging
import PresenceStore
import ServiceKit
import Synchronization

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .cpuTotal, .throughput, .mallocCountTotal],
    maxDuration: .seconds(3), maxIterations: 100_000)
  let logger = {
    var logger = Logger(label: "micro-benchmarks")
    logger.logLevel = .critical
    return logger
  }()
  let users = (0..<5_000).map { "user-\($0)" }

  // One pong: the gateway marks its user seen (a dictionary upsert under a mutex). 5,000
  // users, as one batch: after the first pass every call updates an existing entry, as between
  // two flushes of a gateway whose users answer once a second.
  Benchmark(
    "PresenceReporter.record (pong record)", configuration: .init(scalingFactor: .kilo)
  ) { (benchmark: Benchmark, reporter: PresenceReporter) in
    let now = ContinuousClock.now
    for i in benchmark.scaledIterations {
      reporter.record(users[i % users.count], at: now)
    }
  } setup: {
    // Never run: no connection is made, nothing is flushed.
    try PresenceReporter(
      configuration: .init(
        gatewayID: "micro", endpoints: [HostPort(host: "127.0.0.1", port: 9)]),
      logger: logger)
  }

  // A status-side batch upsert of 5,000 users already stored, each with a later timestamp:
  // what one gateway's flush costs the store, per batch (allocations: the store's own).
  let timestamp = LockedBox(Int64(Date().timeIntervalSince1970 * 1000))
  @Sendable func nextBatch() -> [PresenceRecord] {
    let now = timestamp.update { $0 += 1 }
    return users.map { PresenceRecord(userID: $0, lastSeenMillis: now) }
  }

  func upsertBenchmark(
    _ store: String, teardown: (@Sendable () -> Void)? = nil,
    open: @escaping @Sendable () async throws -> any PresenceStore
  ) {
    Benchmark(
      "\(store)PresenceStore.record, batch of 5,000 updates",
      configuration: .init(maxDuration: .seconds(5), maxIterations: 200)
    ) { (benchmark: Benchmark, store: any PresenceStore) async in
      let batch = nextBatch()
      benchmark.startMeasurement()
      do { try await store.record(batch) } catch { benchmark.error("\(error)") }
      benchmark.stopMeasurement()
    } setup: {
      let store = try await open()
      try await store.record(nextBatch())
      return store
    } teardown: {
      teardown?()
    }
  }

  upsertBenchmark("SQLite") {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "micro-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return try SQLitePresenceStore(
      path: directory.appendingPathComponent("presence.sqlite").path, logger: logger)
  }

  if let url = ProcessInfo.processInfo.environment["POSTGRES_URL"] {
    // Schema `micro_bench` of that database (created, kept between runs); the store's pool
    // runs in a task of the benchmark's own, cancelled at its teardown.
    let running = LockedBox<Task<Void, Never>?>(nil)
    upsertBenchmark("Postgres", teardown: { running.update { $0?.cancel(); $0 = nil } }) {
      var configuration = try PostgresPresenceStore.Configuration(url: url)
      try configuration.setSchema("micro_bench")
      let store = PostgresPresenceStore(configuration: configuration, logger: logger)
      running.update { $0 = Task { await store.run() } }
      return store
    }
  }

  // A count served from the cache (the answer is fresh): what most
  // FetchOnlineUsersInLast3Mins calls cost the status service beyond gRPC.
  Benchmark(
    "CachedCount.count, cache hit", configuration: .init(scalingFactor: .kilo)
  ) { (benchmark: Benchmark, cache: CachedCount) async in
    for _ in benchmark.scaledIterations {
      do { blackHole(try await cache.count(sinceMillis: 0)) } catch {
        benchmark.error("\(error)")
      }
    }
  } setup: {
    let cache = CachedCount(maxAge: .seconds(3_600)) { _ in 1_000_000 }
    _ = try await cache.count(sinceMillis: 0)
    return cache
  }
}

/// A value the benchmarks' closures share (they are run one at a time, but are `Sendable`).
final class LockedBox<Value: Sendable>: Sendable {
  private let mutex: Mutex<Value>
  init(_ value: Value) { mutex = Mutex(value) }
  /// Changes the value and returns the new one.
  @discardableResult
  func update(_ body: (inout Value) -> Void) -> Value {
    mutex.withLock { value in
      body(&value)
      return value
    }
  }
}
