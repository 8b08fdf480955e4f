// The online counter's hot paths, with allocation counts (package-benchmark): the gateway's
// ping tick and per-stream pong path (through the stream handler its port runs, reached with
// `@_spi(Benchmarks)`), the pong record (PresenceReporter), the status side's batch upsert
// (SQLite always, PostgreSQL when POSTGRES_URL is set) and the count cache's hit.
import Benchmark
@_spi(Benchmarks) import CounterGateway
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
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
    upsertBenchmark(
      "Postgres",
      teardown: {
        running.update {
          $0?.cancel()
          $0 = nil
        }
      }
    ) {
      var configuration = try PostgresPresenceStore.Configuration(url: url)
      try configuration.setSchema("micro_bench")
      let store = PostgresPresenceStore(configuration: configuration, logger: logger)
      running.update { $0 = Task { await store.run() } }
      return store
    }
  }

  // The ping tick: one visit of a slot holding 10,000 streams (the scheduler decides each
  // session's ping and groups them per event loop), then that loop's batch: every stream's
  // handler writes and flushes its ping. Per sample: 10,000 pings. The streams are real
  // `ConnectStreamHandler`s on embedded channels sharing one event loop (a gateway has one
  // per core); what HTTP/2 and TLS then do with each frame is not included.
  Benchmark(
    "Gateway ping tick, one slot of 10,000 streams (visit and ping writes)",
    configuration: .init(maxDuration: .seconds(5), maxIterations: 1_000)
  ) { (benchmark: Benchmark, streams: GatewayStreams) in
    benchmark.startMeasurement()
    let sent = streams.gateway.visitPingSlots(0...0, now: streams.opened)
    streams.loop.run()
    benchmark.stopMeasurement()
    if sent != streams.channels.count { benchmark.error("\(sent) pings sent") }
    streams.drainOutbound()
  } setup: {
    try GatewayStreams(count: 10_000, logger: logger)
  }

  // The pong path: one EVEN pong in its own DATA frame on each of 1,000 streams: the message
  // cut from the frame, the `Pong` decoded, the session's liveness and pong budget, the
  // metric, the user marked seen for the next flush. Per sample: 1,000 pongs. A stream may
  // send 10 pongs at once (its budget's burst), so the streams are replaced, outside the
  // measurement, every 9 samples.
  Benchmark(
    "Gateway pong path, 1,000 streams x one pong (frame to presence record)",
    configuration: .init(maxDuration: .seconds(5), maxIterations: 5_000)
  ) { (benchmark: Benchmark, box: LockedBox<(streams: GatewayStreams?, pongs: Int)>) in
    do {
      var current = box.update { $0.pongs += 1 }
      if current.streams == nil || current.pongs > 9 {
        current.streams?.close()
        let fresh = try GatewayStreams(count: 1_000, logger: logger)
        current = box.update { $0 = (fresh, 1) }
      }
      guard let streams = current.streams else { return }
      let frame = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(GatewayStreams.evenPong)))
      benchmark.startMeasurement()
      for channel in streams.channels { try channel.writeInbound(frame) }
      benchmark.stopMeasurement()
      if streams.gateway.connectedClients != streams.channels.count {
        benchmark.error("\(streams.gateway.connectedClients) streams left open")
      }
    } catch {
      benchmark.error("\(error)")
    }
  } setup: {
    LockedBox<(streams: GatewayStreams?, pongs: Int)>((nil, 0))
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

/// `count` open `Connect` streams on one gateway: each a `ConnectStreamHandler` (the handler
/// the gateway's port puts on every HTTP/2 stream) on an embedded channel, all on one event
/// loop, all pinged on slot 0. The gateway never reports (its reporter is not run, so its
/// status endpoint is never dialled). Used by one benchmark thread at a time.
final class GatewayStreams: Sendable {
  static let evenPong = ByteBuffer(bytes: [0, 0, 0, 0, 2, 0x08, 0x01])  // Pong{status: EVEN}

  let gateway: Gateway
  let loop: EmbeddedEventLoop
  let channels: [EmbeddedChannel]
  /// When the streams opened: their last pong, as far as the pong timeout is concerned.
  let opened = ContinuousClock.now

  init(count: Int, logger: Logger) throws {
    let reporter = try PresenceReporter(
      configuration: .init(gatewayID: "micro", endpoints: [HostPort(host: "127.0.0.1", port: 9)]),
      logger: logger)
    var configuration = Gateway.Configuration()
    configuration.maxClients = count
    let gateway = Gateway(
      configuration: configuration, reporter: reporter, health: nil, logger: logger)
    let loop = EmbeddedEventLoop()
    var channels: [EmbeddedChannel] = []
    for index in 0..<count {
      let channel = EmbeddedChannel(handler: gateway.makeStreamHandler(slot: 0), loop: loop)
      try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
      let headers: HPACKHeaders = [
        ":method": "POST", ":scheme": "http", ":path": "/tenten.interview.Gateway/Connect",
        "content-type": "application/grpc", "te": "trailers", "client-id": "user-\(index)",
      ]
      try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: headers)))
      channels.append(channel)
    }
    (self.gateway, self.loop, self.channels) = (gateway, loop, channels)
    drainOutbound()
    guard gateway.connectedClients == count else {
      throw GatewayStreamsError.notOpened(gateway.connectedClients)
    }
  }

  /// Reads away what the handlers wrote (headers, pings), as HTTP/2 would.
  func drainOutbound() {
    for channel in channels {
      while (try? channel.readOutbound(as: HTTP2Frame.FramePayload.self)) != nil {}
    }
  }

  /// Ends every stream (the gateway forgets their sessions).
  func close() {
    for channel in channels { _ = try? channel.finish(acceptAlreadyClosed: true) }
    loop.run()
  }
}

enum GatewayStreamsError: Error {
  case notOpened(Int)
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
