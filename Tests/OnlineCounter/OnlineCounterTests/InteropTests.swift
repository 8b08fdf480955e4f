import Foundation
import ServiceKit
import TestSupport
import Testing

/// Independent gRPC implementations as clients of a real gateway, each multiplexing many
/// `Connect` streams on one HTTP/2 connection, with their default settings: the load tools of
/// Benchmarks/interop, which print one JSON report.
///
/// grpc-go (and grpc-java) probe their flow-control window with a PING about once per message
/// received, so 100 streams pinged every second send ~100 PINGs a second: without
/// `PingPacingHandler`, swift-nio-http2 closed such a connection after 200 control frames,
/// within about 3 s (ENHANCE_YOUR_CALM; every stream ended UNAVAILABLE). grpcio (C-core) backs
/// its probes off to one every few seconds and was served before the fix too: its test guards
/// interoperability with a second implementation, not this bug.
@Suite struct InteropTests {
  /// How long each client holds its streams: several times what the unpaced gateway took to
  /// close a 100-stream grpc-go connection (200 pings at ~100 a second), so that a regression
  /// cannot pass by luck; well under the suite's patience.
  static let holdSeconds = 12
  static let unreachableStatus = [HostPort(host: "127.0.0.1", port: 1)]

  /// A load tool's report (see Benchmarks/interop).
  struct Report: Decodable {
    var streams: Int
    var endedByServer: Int
    var errors: [String: Int]
    var pingsMin: Int
    var pingsMax: Int

    enum CodingKeys: String, CodingKey {
      case streams, errors
      case endedByServer = "ended_by_server"
      case pingsMin = "pings_min"
      case pingsMax = "pings_max"
    }
  }

  static func report(from result: ProcessResult) throws -> Report {
    let line = try #require(
      result.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
      "no report; status \(result.status), output: \(result.output)")
    return try JSONDecoder().decode(Report.self, from: Data(line.utf8))
  }

  /// No stream was ended by the gateway, and each got pings.
  static func expectServed(_ report: Report, streams: Int) {
    #expect(report.streams == streams)
    #expect(report.endedByServer == 0, "ended by the gateway: \(report.errors)")
    #expect(report.pingsMin > 0, "pings per stream: \(report.pingsMin)...\(report.pingsMax)")
  }

  @Test(.requiresGoGRPC) func grpcGoClientWithManyStreamsOnOneConnection() async throws {
    let client = try await Self.buildGoClient()
    defer { try? FileManager.default.removeItem(atPath: client.deletingLastPathComponent().path) }
    let streams = 100
    try await Harness.withGateway(status: Self.unreachableStatus) { gateway, _, _, _ in
      let result = try await runProcess(
        client.path,
        [
          "-target", "\(gateway)", "-streams", "\(streams)", "-seconds", "\(Self.holdSeconds)",
          "-id-prefix", "go",
        ],
        timeout: .seconds(Self.holdSeconds + 60))
      Self.expectServed(try Self.report(from: result), streams: streams)
    }
  }

  @Test(.requiresPythonModule("grpc", install: "grpcio"))
  func grpcioClientWithManyStreamsOnOneChannel() async throws {
    let python = try #require(TestEnvironment.which("python3"))
    let script = packageRoot.appending(path: "Benchmarks/interop/grpcio_streams.py").path
    let streams = 150
    try await Harness.withGateway(status: Self.unreachableStatus) { gateway, _, _, _ in
      let result = try await runProcess(
        python,
        [
          script, "\(gateway)", "--streams", "\(streams)", "--seconds", "\(Self.holdSeconds)",
          "--id-prefix", "grpcio",
        ],
        timeout: .seconds(Self.holdSeconds + 60))
      Self.expectServed(try Self.report(from: result), streams: streams)
    }
  }

  /// Pacing is no hole: a client that sends pings without waiting for acks is still closed
  /// with ENHANCE_YOUR_CALM (here by the keepalive policy's ping strikes, as no call carries
  /// data; with data flowing, by swift-nio-http2's 200 control frames in 30 s, which the pings
  /// past the few held back count against).
  @Test(.requires(.tool("python3", install: "apt-get install python3")))
  func aPingFloodIsStillRefused() async throws {
    let python = try #require(TestEnvironment.which("python3"))
    let script = packageRoot.appending(path: "Benchmarks/interop/ping_flood.py").path
    try await Harness.withGateway(status: Self.unreachableStatus) { gateway, _, _, _ in
      let result = try await runProcess(
        python, [script, "\(gateway)", "--flood", "400"], timeout: .seconds(60))
      let line = try #require(
        result.stdout.split(separator: "\n").last, "no report: \(result.output)")
      let report = try #require(
        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      // The GOAWAY (ENHANCE_YOUR_CALM) itself may be lost to the reset that follows it when
      // the server closes with pings still unread.
      #expect(report["closed_by_server"] as? Bool == true, "\(line)")
      #expect((report["acks"] as? Int ?? .max) < 400, "\(line)")
      if let code = report["goaway_error"] as? Int {
        let enhanceYourCalm = 11
        #expect(code == enhanceYourCalm, "\(line)")
      }
    }
  }

  /// Builds Benchmarks/interop/go's `gatewayload` with Debian's Go and grpc-go (GOPATH mode,
  /// no network) into a fresh temporary directory; returns the binary.
  static func buildGoClient() async throws -> URL {
    let directory = FileManager.default.temporaryDirectory
      .appending(path: "interop-go-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let binary = directory.appending(path: "gatewayload")
    let inherited = ProcessInfo.processInfo.environment
    var environment = [
      "GO111MODULE": "off",
      "GOPATH": packageRoot.appending(path: "Benchmarks/interop/go").path + ":/usr/share/gocode",
      "PATH": inherited["PATH"] ?? "/usr/bin:/bin",
      // Go's build cache, kept between runs where there is a home (a cold build takes ~15 s).
      "GOCACHE": inherited["HOME"].map { "\($0)/.cache/go-build" }
        ?? directory.appending(path: "gocache").path,
    ]
    environment["HOME"] = inherited["HOME"]
    let go = try #require(TestEnvironment.which("go"))
    // A bound on a broken toolchain, not a build-time claim.
    let result = try await runProcess(
      go, ["build", "-o", binary.path, "gatewayload"], environment: environment,
      timeout: .seconds(300))
    #expect(result.status == 0, "go build: \(result.output)")
    return binary
  }
}
