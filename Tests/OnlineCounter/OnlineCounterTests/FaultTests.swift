import CounterClient
import CounterGateway
import CounterModel
import Glibc
import ServiceKit
import Synchronization
import TestSupport
import Testing

/// The faults of issue 10, each recovered from within its target (docs/online-counter.md,
/// "Faults"). Each elapsed-time bound is the mechanism's own bound plus a margin for a loaded
/// 2-core machine, written next to it.
@Suite struct FaultTests {
  /// Issue 10, item 4: a rolling restart gone wrong. The clients start while one gateway is
  /// down (so all of them end up on the other one, and their channel to the first backs
  /// off), the first comes back, and the second is SIGKILLed at once. Every client must be on
  /// the one that came back within 3 s (the target); before the fix, the channel's backoff
  /// (1 s growing ×1.6 to 2 min) made streams to the returned gateway fail fast while the
  /// clients' own backoff grew towards 10 s, so failover took 8–21 s.
  @Test(.requires(.product("gateway"))) func clientsLeaveAKilledGatewayWithinThreeSeconds()
    async throws
  {
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL()) { status, _ in
      try await Harness.withServerProcess("gateway", ["--status", "\(status)"]) {
        doomed, process in
        // Down: connections to it are refused at once.
        let returning = try ReservedPort()
        let ids = (0..<50).map { "failover-\($0)" }
        let client = CounterClient(
          configuration: .init(
            ids: ids, gateways: [doomed, HostPort(host: Harness.loopback, port: returning.port)],
            connections: 2),
          logger: Harness.logger)
        try await Harness.withClient(client) {
          let clock = ContinuousClock()
          let started = clock.now
          let connected = await eventually(timeout: .seconds(20)) {
            client.stats.connected == ids.count
          }
          try #require(connected, "\(client.stats.connected) of \(ids.count) connected")
          // The scenario, not a wait for a state: the gateway comes back 6.5 s after the clients
          // started, when their channel to it (attempts at 0, 1, 2.6, 5.2 ± 1 s, then 9.3 s with
          // gRPC's default backoff) has just backed off for a long while.
          try await Task.sleep(until: started + .milliseconds(6_500), clock: clock)
          returning.release()
          try await Harness.withGateway(status: [status], port: returning.port) {
            _, survivor, _, _ in
            let killed = clock.now
            await process.kill()
            let moved = await eventually(timeout: .seconds(30)) {
              survivor.connectedClients == ids.count && client.stats.connected == ids.count
            }
            let elapsed = clock.now - killed
            try #require(moved, "\(survivor.connectedClients) of \(ids.count) on the survivor")
            // The mechanism: each stream fails as its socket closes and is retried at once on
            // the other gateway's connection; while that connection is still reconnecting
            // (its backoff is capped at 1 s, +20 % jitter) the attempt fails fast and the
            // client alternates with retries of at most 1 s. So ≤ 1.2 s + 1 s. The 3 s target
            // is measured as a benchmark (docs/online-counter.md, "Faults"); this bound keeps
            // 7.8 s of margin for a loaded machine (5.3 s was seen under a parallel build) and
            // still fails the old behaviour, 16–22 s.
            #expect(elapsed < .seconds(10), "all on the survivor after \(elapsed)")
          }
        }
      }
    }
  }

  /// Issue 10, item 5: users who join while status is down are counted within 3 s of it
  /// coming back (before: 14.7 s after a 60 s outage, the reporter's backoff having grown to
  /// 10 s and its channel's connect backoff further still).
  @Test func usersWhoJoinedDuringAStatusOutageAreCountedWithinThreeSecondsOfItsReturn()
    async throws
  {
    let store = Harness.temporaryStoreURL()
    // Held, not merely free: while status is down nobody else may answer on its port.
    let reserved = try ReservedPort()
    let status = HostPort(host: Harness.loopback, port: reserved.port)
    // The production backoff (the harness only shortens the flush interval, to 200 ms).
    try await Harness.withGateway(status: [status]) { gateway, _, reporter, _ in
      let ids = (0..<10).map { "outage-\($0)" }
      let client = CounterClient(
        configuration: .init(ids: ids, gateways: [gateway]), logger: Harness.logger)
      try await Harness.withClient(client) {
        let clock = ContinuousClock()
        let joined = await eventually(timeout: .seconds(20)) {
          reporter.pendingCount == ids.count
        }
        try #require(joined, "\(reporter.pendingCount) of \(ids.count) waiting to be reported")
        let outage = clock.now
        // The scenario, not a wait for a state: status stays away 14 s. With the old backoff
        // (200 ms doubling to 10 s) the failed flushes came at about 0.2, 0.6, 1.4, 3, 6.2,
        // 12.6 and 22.6 s, so status returned in the middle of a 10 s wait.
        try await Task.sleep(until: outage + .seconds(14), clock: clock)
        reserved.release()
        try await Harness.withStatus(storeURL: store, port: status.port) { _, reader in
          let back = clock.now
          let counted = await eventually(timeout: .seconds(30)) {
            (try? await reader.onlineUsers()) == UInt64(ids.count)
          }
          let elapsed = clock.now - back
          try #require(counted, "counted again after the outage")
          // The mechanism: the reporter retries at most 1 s after a failed flush, and its
          // connection to status reconnects at most 1.2 s (1 s + 20 % jitter) after status
          // listens, so ≤ 2.2 s plus one call. The 3 s target is measured as a benchmark
          // (docs/online-counter.md, "Faults"); 7 s leaves 4.8 s of margin for a loaded
          // machine and still fails the old behaviour (8.6 s every time for this outage).
          #expect(elapsed < .seconds(7), "counted \(elapsed) after status came back")
        }
      }
    }
  }

  /// Issue 10, item 6: a gateway whose wall clock is 30 s ahead (before: every record refused
  /// as from the future), a status 10 s behind (before: every current record refused), and
  /// both: every user is counted, because records say how long ago each user was seen on the
  /// gateway's monotonic clock and status places that on its own.
  @Test(arguments: [(Int64(30_000), Int64(0)), (0, -10_000), (30_000, -10_000)])
  func usersAreCountedWhateverTheClocksOfGatewayAndStatus(
    gatewayOffset: Int64, statusOffset: Int64
  ) async throws {
    try await Harness.withStatus(
      storeURL: Harness.temporaryStoreURL(), clock: { systemMillisClock() + statusOffset }
    ) { status, reader in
      try await Harness.withGateway(
        status: [status], clock: { systemMillisClock() + gatewayOffset }
      ) { gateway, _, _, _ in
        let ids = (0..<5).map { "skewed-\($0)" }
        let client = CounterClient(
          configuration: .init(ids: ids, gateways: [gateway]), logger: Harness.logger)
        try await Harness.withClient(client) {
          let counted = await eventually(timeout: .seconds(20)) {
            (try? await reader.onlineUsers()) == UInt64(ids.count)
          }
          let count = try? await reader.onlineUsers()
          #expect(counted, "\(String(describing: count)) of \(ids.count) counted")
        }
      }
    }
  }

  /// A gateway process stopped for longer than the pong timeout (SIGSTOP: no CPU at all, as
  /// in a long starvation) keeps its clients: their pongs wait in the sockets meanwhile, and
  /// silence is counted from the end of the stall (`PingScheduler`). Before, the first tick
  /// after the stall ended every stream ("no pong for more than 5 seconds") and all the
  /// clients reconnected at once into the process that had just been starved.
  @Test(.requires(.product("gateway"))) func aStalledGatewayKeepsItsClients() async throws {
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL()) { status, _ in
      try await Harness.withServerProcess("gateway", ["--status", "\(status)"]) {
        gateway, process in
        let ids = (0..<20).map { "stalled-gateway-\($0)" }
        let client = CounterClient(
          configuration: .init(ids: ids, gateways: [gateway], connections: 1),
          logger: Harness.logger)
        try await Harness.withClient(client) {
          let connected = await eventually(timeout: .seconds(20)) {
            client.stats.connected == ids.count && client.stats.summary().pingsReceived > 0
          }
          try #require(connected, "\(client.stats.connected) of \(ids.count) connected")
          _ = client.stats.summary()  // what ended before the stall is not counted
          process.signal(SIGSTOP)
          // The 5 s pong timeout plus the second between two pings and a margin: every
          // client is past its deadline when the gateway resumes.
          try await Task.sleep(for: .seconds(7))
          process.signal(SIGCONT)
          // Each summary reports the streams ended since the previous one: add them up.
          let ended = Mutex((count: 0, reason: ""))
          let pingsBefore = client.stats.summary().pingsReceived
          let resumed = await eventually(timeout: .seconds(20)) {
            let summary = client.stats.summary()
            ended.withLock { ended in
              ended.count += summary.streamsEnded
              if let reason = summary.lastEndReason, summary.streamsEnded > 0 {
                ended.reason = reason
              }
            }
            // Two more pings each: the gateway has run past its first ticks after the stall.
            return summary.pingsReceived >= pingsBefore + 2 * UInt64(ids.count)
          }
          #expect(resumed, "pings did not resume after the stall")
          let (count, reason) = ended.withLock { ($0.count, $0.reason) }
          #expect(count == 0, "\(count) streams ended by the stall: \(reason)")
        }
      }
    }
  }
}
