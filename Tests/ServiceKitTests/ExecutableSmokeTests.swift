import Foundation
import NIOCore
import NIOPosix
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

  /// A port that was free a moment ago (bound to port 0 and released).
  static func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    return port
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
    let grpcPort = try await Self.freePort()
    let metricsPort = try await Self.freePort()
    let data = FileManager.default.temporaryDirectory.appending(path: "smoke-\(UUID())")
    defer { try? FileManager.default.removeItem(at: data) }
    let process = Process()
    process.executableURL = binary
    process.arguments = [
      "--listen", "127.0.0.1:\(grpcPort)", "--metrics-listen", "127.0.0.1:\(metricsPort)",
      "--log-format", "json", "--shutdown-grace", "5",
    ] + (name == "status" ? ["--store", "sqlite:\(data.path)/status.sqlite"] : [])
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    defer { if process.isRunning { process.terminate() } }

    let address = HostPort(host: "127.0.0.1", port: grpcPort)
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
