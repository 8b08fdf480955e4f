import CounterClient
import CounterGateway
import CounterStatus
import Foundation
import Logging
import ServiceKit
import ServiceLifecycle

/// The online counter on loopback: a status service on a temporary SQLite file, two gateways
/// and six clients. It prints the count every second, stops half of the clients midway and
/// shows that they are still counted (the 3-minute window), then shuts everything down
/// gracefully.
struct CounterDemo: Service {
  let duration: Duration
  let logger: Logger

  func run() async throws {
    let directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("counter-demo-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: directory) }
    // Built as the `status` and `gateway` executables build them, on loopback.
    let status = try await StatusServer.build(
      configuration: .init(
        listen: HostPort(host: "127.0.0.1", port: 0),
        storeURL: "sqlite:\(directory.appendingPathComponent("status.sqlite").path)"),
      logger: logger)
    let reader = status.reader
    let statusGroup = Self.group(status.services, logger: logger)

    try await withThrowingTaskGroup { tasks in
      tasks.addTask { try await statusGroup.run() }
      guard let statusAddress = await status.server.listeningAddress else {
        throw DemoError(message: "status server did not start")
      }
      print("status service on \(statusAddress) (SQLite in \(directory.path))")

      var gateways: [(ServiceGroup, HostPort)] = []
      for name in ["gateway-a", "gateway-b"] {
        let gateway = try GatewayServer.build(
          configuration: .init(
            listen: HostPort(host: "127.0.0.1", port: 0), gatewayID: name,
            statusEndpoints: [statusAddress]),
          logger: logger)
        let group = Self.group(gateway.services, logger: logger)
        tasks.addTask { try await group.run() }
        guard let address = await gateway.server.listeningAddress else {
          throw DemoError(message: "\(name) did not start")
        }
        print("\(name) on \(address)")
        gateways.append((group, address))
      }
      let addresses = gateways.map(\.1)
      let staying = ["alice", "bob", "carol"]
      let leaving = ["dave", "erin", "frank"]
      print("clients \((staying + leaving).joined(separator: ", ")) connect over both gateways")

      // Runs until the duration ends or Ctrl-C (graceful shutdown).
      try? await cancelWhenGracefulShutdown {
        try await self.timeline(
          reader: reader, gateways: addresses, staying: staying, leaving: leaving)
      }

      print("shutting down: gateways drain and flush, then the status service stops")
      for (group, _) in gateways { await group.triggerGracefulShutdown() }
      // Let the gateways finish before the status service they flush to goes away.
      try await Task.sleep(for: .milliseconds(500))
      print("final count: \(try await reader.onlineUsers())")
      await statusGroup.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
  }

  private func timeline(
    reader: StatusReader, gateways: [HostPort], staying: [String], leaving: [String]
  ) async throws {
    let stayers = CounterClient(
      configuration: .init(ids: staying, gateways: gateways, connections: 2), logger: logger)
    let leavers = CounterClient(
      configuration: .init(ids: leaving, gateways: gateways.reversed(), connections: 2),
      logger: logger)
    let seconds = Int(duration / .seconds(1))
    let half = max(seconds / 2, 1)
    try await withThrowingTaskGroup { clients in
      clients.addTask { try await stayers.run() }
      try await withThrowingTaskGroup { leavingTasks in
        leavingTasks.addTask { try await leavers.run() }
        try await report(reader: reader, from: 1, to: half) {
          stayers.stats.connected + leavers.stats.connected
        }
        leavingTasks.cancelAll()
      }
      print(
        "stopped \(leaving.joined(separator: ", ")): still counted for 180 s after their last pong")
      try await report(reader: reader, from: half + 1, to: seconds) { stayers.stats.connected }
      clients.cancelAll()
    }
  }

  private func report(
    reader: StatusReader, from: Int, to: Int, connected: @Sendable () -> Int
  ) async throws {
    guard from <= to else { return }
    for second in from...to {
      try await Task.sleep(for: .seconds(1))
      let online = try await reader.onlineUsers()
      print("t=\(second)s online (last 3 min)=\(online) connected now=\(connected())")
    }
  }

  private static func group(_ services: [any Service], logger: Logger) -> ServiceGroup {
    ServiceGroup(
      configuration: .init(
        services: services.map { .init(service: $0) }, gracefulShutdownSignals: [],
        logger: logger))
  }
}

struct DemoError: Error, CustomStringConvertible {
  var message: String
  var description: String { message }
}
