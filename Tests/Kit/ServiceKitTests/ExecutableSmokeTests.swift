import Foundation
import ServiceKit
import TestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The real server binaries, as an operator runs them: health SERVING, reflection through
/// grpcurl, Prometheus text on /metrics, and exit status 0 soon after SIGTERM.
@Suite(.serialized) struct ExecutableSmokeTests {
  /// The addresses a server logged once bound (`server.address`, `metrics.address` in its
  /// JSON log). Binding port 0 in the server itself leaves no window in which another socket
  /// (e.g. a client connection of a parallel test) can take a port we picked.
  static func boundAddresses(
    of process: BackgroundProcess
  ) async throws -> (grpc: HostPort, metrics: HostPort)? {
    var found: (grpc: HostPort, metrics: HostPort)?
    // A bound on how long a broken binary keeps the test waiting, not a start-up target.
    _ = await eventually(timeout: .seconds(20)) {
      let log = process.log
      func field(_ name: String) -> HostPort? {
        guard let range = log.range(of: "\"\(name)\":\"") else { return nil }
        return HostPort(String(log[range.upperBound...].prefix { $0 != "\"" }))
      }
      if let grpc = field("server.address"), let metrics = field("metrics.address") {
        found = (grpc, metrics)
      }
      return found != nil
    }
    return found
  }

  @Test(
    .requires(.product("status")), .requires(.product("gateway")),
    arguments: [
      ("status", "tenten.interview.StatusReader"), ("gateway", "tenten.interview.Gateway"),
    ])
  func serverBinary(name: String, service: String) async throws {
    let data = FileManager.default.temporaryDirectory.appending(path: "smoke-\(UUID())")
    try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: data) }
    let arguments =
      [
        "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--log-format", "json", "--shutdown-grace", "5",
      ] + (name == "status" ? ["--store", "sqlite:\(data.path)/status.sqlite"] : [])
    try await withBackgroundProcess(builtProduct(name), arguments) { process in
      let bound = try await Self.boundAddresses(of: process)
      let address = try #require(bound?.grpc, "\(name) logged no bound addresses: \(process.log)")
      let metricsPort = try #require(bound?.metrics.port)
      // Bounds on how long a broken binary keeps the test waiting, not start-up targets: a
      // probe's 1 s deadline and 10 s in all were missed with both cores under stress-ng
      // (the probe is tasks of this process, whose pool was seen seconds late then).
      let serving = await eventually(timeout: .seconds(30)) {
        (try? await HealthProbe.check(address, timeout: .seconds(5)).get()) == .serving
      }
      #expect(serving, "\(name) never reported SERVING")

      let (body, response) = try await URLSession.shared.data(
        from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
      #expect((response as? HTTPURLResponse)?.statusCode == 200)
      #expect(!body.isEmpty)

      if let grpcurl = TestEnvironment.which("grpcurl") {
        let list = try await StandardServicesTests.run(
          grpcurl, ["-plaintext", "\(address)", "list"])
        #expect(list.contains(service))
        #expect(list.contains("grpc.health.v1.Health"))
      }

      process.signal(SIGTERM)
      // The grace given on the command line is 5 s; 15 s bounds a hung drain.
      let status = await process.waitForExit(timeout: .seconds(15))
      #expect(status != nil, "\(name) still running 15 s after SIGTERM")
      #expect(status == 0, "\(name) exited with \(String(describing: status))")
    }
  }

  /// Regression: a server whose port was taken kept running for minutes, serving /metrics,
  /// logging nothing, and passing `--health-check` through whoever owned the port.
  @Test(
    "a server that cannot listen exits at once, naming the address and the reason",
    .requires(.product("status")), .requires(.product("gateway")),
    arguments: ["status", "gateway"])
  func serverThatCannotListenExits(name: String) async throws {
    try await StandardServicesTests.withServer { taken, _, _ in
      let data = FileManager.default.temporaryDirectory.appending(path: "taken-\(UUID())")
      defer { try? FileManager.default.removeItem(at: data) }
      let arguments =
        ["--listen", "\(taken)", "--metrics-listen", "127.0.0.1:0"]
        + (name == "status" ? ["--store", "sqlite:\(data.path)/status.sqlite"] : [])
      // 30 s bounds how long a hanging binary keeps the test waiting (it is then killed, and
      // reports 137); a binary that notices exits within a second.
      let result = try await runProcess(builtProduct(name), arguments, timeout: .seconds(30))
      #expect(result.status != 0 && result.status != 137, "exit status \(result.status)")
      #expect(result.output.contains("\(taken)"), "\(result.output)")
      #expect(result.output.contains("Address already in use"), "\(result.output)")
    }
  }

  /// Regression: a negative number was taken for a flag (`--max-clients -5` said "Missing
  /// value"), so the real check never ran.
  @Test(
    "negative numbers reach validation and get its message",
    .requires(.product("status")), .requires(.product("gateway")), .requires(.product("client")),
    arguments: [
      ("gateway", ["--max-clients", "-5"], "--max-clients must be at least 1"),
      ("gateway", ["--pong-timeout", "-1"], "--pong-timeout must be between 1 and 3600"),
      ("status", ["--count-cache", "-1"], "--count-cache must be between 0 and 1"),
      ("status", ["--shutdown-grace", "-3"], "--shutdown-grace must be between 1 and 3600"),
      ("client", ["--count", "-5"], "--count must be at least 1"),
    ])
  func negativeNumbersReachValidation(name: String, arguments: [String], message: String)
    async throws
  {
    let result = try await runProcess(builtProduct(name), arguments)
    // 64: EX_USAGE, as swift-argument-parser exits on a validation error.
    #expect(result.status == 64, "\(result.status): \(result.output)")
    #expect(result.output.contains(message), "\(result.output)")
  }

  /// Regression: `client --help` printed a random UUID as the default id.
  @Test(.requires(.product("client")))
  func clientHelpShowsNoRandomDefault() async throws {
    let result = try await runProcess(builtProduct("client"), ["--help"])
    #expect(result.status == 0)
    let uuid = #/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/#
    #expect(result.output.firstMatch(of: uuid) == nil, "\(result.output)")
    #expect(result.output.contains("default: a fresh UUID"))
  }

  /// Regression: `client --count` against an unreachable gateway printed `connected=0` and
  /// nothing about why.
  @Test(.requires(.product("client")))
  func loadClientSaysWhyNothingIsConnected() async throws {
    // Port 1 on loopback: nothing listens, connections are refused at once. The client runs
    // until stopped, so the timeout ends it (after 2 summary lines at least).
    let result = try await runProcess(
      builtProduct("client"),
      ["--count", "2", "--gateway", "127.0.0.1:1", "--summary-interval", "1"],
      timeout: .seconds(4))
    #expect(result.stdout.contains("connected=0"), "\(result.output)")
    #expect(result.stdout.contains("last_end="), "\(result.output)")
  }
}
