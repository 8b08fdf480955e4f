import CounterClient
import CounterGateway
import GRPCCore
import ServiceKit
import ServiceLifecycle
import TestSupport
import Testing

/// Issue 4, "Done when": two status replicas on one PostgreSQL database, two gateways that
/// each report to both replicas, and clients spread over both gateways, all on loopback. The
/// count must be exact at the start and after each failure the design claims to survive:
/// a replica killed, a gateway drained, the database restarted.
@Suite struct ScaleOutTests {
  @Test(.requires(.postgresServer), .requires(.product("status")))
  func exactCountThroughReplicaKillGatewayDrainAndDatabaseRestart() async throws {
    try await PrivateCluster.withCluster { cluster in
      // Deadlines of 1 s, so that calls fail fast (UNAVAILABLE) while the database is down.
      let store = cluster.url + "?operation_timeout_ms=1000&connect_timeout=1"
      // The replica that is killed is the real executable, so that it dies as in production.
      try await Harness.withStatusProcess(storeURL: store) { doomed, doomedProcess in
        try await Harness.withStatus(storeURL: store) { survivor, _ in
          let status = [doomed, survivor]
          try await Harness.withGateway(status: status) { drained, drainedGateway, _, group in
            try await Harness.withGateway(status: status) { remaining, remainingGateway, _, _ in
              let deployment = Deployment(
                cluster: cluster, doomedStatus: doomed, survivingStatus: survivor,
                doomedStatusProcess: doomedProcess, gateways: [drained, remaining],
                drainedGateway: drainedGateway, drainedGatewayGroup: group,
                remainingGateway: remainingGateway)
              try await deployment.exercise()
            }
          }
        }
      }
    }
  }
}

extension ScaleOutTests {
  /// A gateway SIGKILLed (no drain, up to a second of presence unflushed): its clients
  /// reconnect to the other gateway, whose pongs re-mark them long before the 180 s window
  /// could drop them, so the count never dips and new users keep being counted.
  @Test(.requires(.product("gateway"))) func killedGatewayLosesNoUser() async throws {
    try await Harness.withStatus(storeURL: Harness.temporaryStoreURL()) { status, _ in
      try await Harness.withServerProcess("gateway", ["--status", "\(status)"]) {
        doomed, process in
        try await Harness.withGateway(status: [status]) { survivor, gateway, _, _ in
          let ids = (0..<20).map { "killed-gateway-\($0)" }
          let client = CounterClient(
            configuration: .init(ids: ids, gateways: [doomed, survivor], connections: 2),
            logger: Harness.logger)
          try await Harness.withClient(client) {
            // Bounds for a loaded machine, not latencies: each normally holds within a few
            // seconds (a presence flush per second, reconnects after 100–200 ms of backoff); 10 s each was
            // hit beside `stress-ng`, so 30 s.
            let spread = await eventually(timeout: .seconds(30)) {
              let counted = (try? await Harness.fetchCount(from: status)) == UInt64(ids.count)
              return counted && client.stats.connected == ids.count
                && gateway.connectedClients < ids.count
            }
            try #require(spread, "all counted, some through the gateway that is killed")
            await process.kill()
            let moved = await eventually(timeout: .seconds(30)) {
              gateway.connectedClients == ids.count && client.stats.connected == ids.count
            }
            #expect(moved, "\(gateway.connectedClients) of \(ids.count) on the survivor")
            #expect(try await Harness.fetchCount(from: status) == UInt64(ids.count))
          }
        }
      }
    }
  }
}

/// Everything the scenario drives. The first status replica is killed, the first gateway
/// drained; the others carry on.
private struct Deployment {
  let cluster: PrivateCluster
  let doomedStatus: HostPort
  let survivingStatus: HostPort
  let doomedStatusProcess: BackgroundProcess
  let gateways: [HostPort]
  let drainedGateway: Gateway
  let drainedGatewayGroup: ServiceGroup
  let remainingGateway: Gateway

  func exercise() async throws {
    let first = client("first", count: 40)
    try await Harness.withClient(first) {
      try await bothReplicasCount(40, connected: [first])
      try await killOneReplica(total: 40)
      let second = client("second", count: 10)
      try await Harness.withClient(second) {
        let counted = await counts(50, at: survivingStatus)
        try #require(counted, "new ids counted through the surviving replica")
        try await drainOneGateway(clients: [first, second], total: 50)
        try await restartPostgreSQL(clients: [first, second], total: 50)
      }
    }
  }

  /// Clients on both gateways (two connections, round robin); both replicas read one table.
  private func bothReplicasCount(_ total: Int, connected clients: [CounterClient]) async throws {
    let spread = await eventually(timeout: .seconds(10)) {
      connected(clients) == total && drainedGateway.connectedClients > 0
        && remainingGateway.connectedClients > 0
    }
    try #require(spread, "\(connected(clients)) clients connected, not \(total) on 2 gateways")
    let doomed = await counts(total, at: doomedStatus)
    let surviving = await counts(total, at: survivingStatus)
    try #require(doomed && surviving, "both replicas answer \(total)")
  }

  /// SIGKILL, possibly with a batch in flight. Not an in-process replica whose task is
  /// cancelled: cancelling a NIO server while it accepts a connection (the gateways reconnect
  /// at once) traps with "Deinited NIOAsyncWriter without calling finish()"
  /// (apple/swift-nio#2813), which would take the whole test process down.
  private func killOneReplica(total: Int) async throws {
    await doomedStatusProcess.kill()
    let gone = await eventually { await count(at: doomedStatus) == nil }
    try #require(gone, "the killed replica stops answering")
    #expect(await count(at: survivingStatus) == UInt64(total), "nobody lost with the replica")
  }

  /// The drained gateway ends its streams with UNAVAILABLE; each client reconnects over its
  /// next connection, which is the other gateway.
  private func drainOneGateway(clients: [CounterClient], total: Int) async throws {
    let clock = ContinuousClock()
    let start = clock.now
    await drainedGatewayGroup.triggerGracefulShutdown()
    // Counting on the remaining gateway, not the clients' total: that is `total` already
    // before the drain has ended a single stream.
    let moved = await eventually(timeout: .seconds(10)) {
      remainingGateway.connectedClients == total && connected(clients) == total
        && drainedGateway.connectedClients == 0
    }
    let elapsed = clock.now - start
    #expect(
      moved, "\(remainingGateway.connectedClients) of \(total) on the other gateway in \(elapsed)")
    #expect(await count(at: survivingStatus) == UInt64(total), "nobody lost in the drain")
  }

  /// Nothing is restarted but PostgreSQL: the replica's pool reconnects by itself and the
  /// gateway, which buffered meanwhile, retries until its batches land.
  private func restartPostgreSQL(clients: [CounterClient], total: Int) async throws {
    try await cluster.stop()
    // The replica says it cannot answer rather than answering a wrong count.
    let down = await eventually { await failure(at: survivingStatus) == .unavailable }
    #expect(down, "UNAVAILABLE while the database is down")
    // New users arrive during the outage: buffered by the gateway, counted once it is over.
    let third = client("third", count: 10)
    try await Harness.withClient(third) {
      let arrived = await eventually { third.stats.connected == 10 }
      #expect(arrived, "new clients connect while the database is down")
      try await cluster.start()
      let counted = await counts(total + 10, at: survivingStatus, timeout: .seconds(15))
      #expect(counted, "counted again after the restart, without restarting anything else")
      #expect(connected(clients) == total, "nobody disconnected by the database outage")
    }
  }

  private func client(_ prefix: String, count: Int) -> CounterClient {
    CounterClient(
      configuration: .init(
        ids: (0..<count).map { "\(prefix)-\($0)" }, gateways: gateways, connections: 2),
      logger: Harness.logger)
  }

  private func connected(_ clients: [CounterClient]) -> Int {
    clients.reduce(0) { $0 + $1.stats.connected }
  }

  /// The count `status` answers; nil while it does not answer.
  private func count(at status: HostPort) async -> UInt64? {
    try? await Harness.fetchCount(from: status)
  }

  /// Whether `status` answers exactly `expected` within `timeout`.
  private func counts(
    _ expected: Int, at status: HostPort, timeout: Duration = .seconds(10)
  ) async -> Bool {
    await eventually(timeout: timeout) { await count(at: status) == UInt64(expected) }
  }

  /// The code `status` fails a count with; nil when it answers.
  private func failure(at status: HostPort) async -> RPCError.Code? {
    do {
      _ = try await Harness.fetchCount(from: status)
      return nil
    } catch let error as RPCError {
      return error.code
    } catch {
      return .unknown
    }
  }
}
