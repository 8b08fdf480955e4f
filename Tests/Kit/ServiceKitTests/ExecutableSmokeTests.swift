import Foundation
import ServiceKit
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The real server binaries, as an operator runs them: health SERVING, reflection through
/// grpcurl, Prometheus text on /metrics, and exit status 0 soon after SIGTERM.
@Suite(.serialized) struct ExecutableSmokeTests {
  static let binDirectory = GeneratedCodeTests.root.appending(
    path: ".build/x86_64-unknown-linux-gnu/debug")

  /// The addresses a server logged once bound (`server.address`, `metrics.address` in its
  /// JSON log). Binding port 0 in the server itself leaves no window in which another socket
  /// (e.g. a client connection of a parallel test) can take a port we picked.
  static func boundAddresses(
    logFile: URL, process: Process
  ) async throws -> (grpc: HostPort, metrics: HostPort)? {
    for _ in 0..<200 where process.isRunning {
      let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
      func field(_ name: String) -> HostPort? {
        guard let range = log.range(of: "\"\(name)\":\"") else { return nil }
        return HostPort(String(log[range.upperBound...].prefix { $0 != "\"" }))
      }
      if let grpc = field("server.address"), let metrics = field("metrics.address") {
        return (grpc, metrics)
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    return nil
  }

  @Test(arguments: [
    ("status", "tenten.interview.StatusReader"), ("gateway", "tenten.interview.Gateway"),
  ])
  func serverBinary(name: String, service: String) async throws {
    let binary = Self.binDirectory.appending(path: name)
    guard FileManager.default.isExecutableFile(atPath: binary.path) else {
      print("skipped: \(binary.path) not built (run swift build first)")
      return
    }
    let data = FileManager.default.temporaryDirectory.appending(path: "smoke-\(UUID())")
    try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: data) }
    let logFile = data.appending(path: "server.log")
    try #require(FileManager.default.createFile(atPath: logFile.path, contents: nil))
    let log = try FileHandle(forWritingTo: logFile)
    defer { try? log.close() }
    let process = Process()
    process.executableURL = binary
    process.arguments = [
      "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
      "--log-format", "json", "--shutdown-grace", "5",
    ] + (name == "status" ? ["--store", "sqlite:\(data.path)/status.sqlite"] : [])
    process.standardOutput = FileHandle.nullDevice
    process.standardError = log
    try process.run()
    defer { if process.isRunning { process.terminate() } }

    let bound = try await Self.boundAddresses(logFile: logFile, process: process)
    let address = try #require(bound?.grpc, "\(name) logged no bound addresses")
    let metricsPort = try #require(bound?.metrics.port)
    var serving = false
    for _ in 0..<100 where !serving {
      if case .success(.serving) = await HealthProbe.check(address, timeout: .seconds(1)) {
        serving = true
      } else {
        try await Task.sleep(for: .milliseconds(100))
      }
    }
    #expect(serving, "\(name) never reported SERVING")

    let (body, response) = try await URLSession.shared.data(
      from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
    #expect((response as? HTTPURLResponse)?.statusCode == 200)
    #expect(!body.isEmpty)

    if let grpcurl = StandardServicesTests.which("grpcurl") {
      let list = try await StandardServicesTests.run(grpcurl, ["-plaintext", "\(address)", "list"])
      #expect(list.contains(service))
      #expect(list.contains("grpc.health.v1.Health"))
    }

    let started = ContinuousClock.now
    process.terminate()  // SIGTERM
    while process.isRunning && ContinuousClock.now - started < .seconds(15) {
      try await Task.sleep(for: .milliseconds(50))
    }
    #expect(!process.isRunning, "\(name) still running 15 s after SIGTERM")
    #expect(process.terminationReason == .exit && process.terminationStatus == 0)
  }
}
