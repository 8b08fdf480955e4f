import Foundation
import PresenceStore
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A port nothing listens on right now (bound to 0, read back, released).
func freeLoopbackPort() throws -> Int {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw POSIXError(.EMFILE) }
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = 0
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let bound = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
      bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
    }
  }
  guard bound else { throw POSIXError(.EADDRINUSE) }
  return Int(UInt16(bigEndian: address.sin_port))
}

/// A throwaway PostgreSQL cluster of our own (initdb in a temporary directory, run as the
/// `postgres` user), so a test can stop and start the server without disturbing the shared
/// one that other tests use.
struct PrivateCluster: Sendable {
  let directory: String
  let port: Int
  let bin: String

  var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

  /// Nil, with a printed reason, where this cannot run (not root, no PostgreSQL installed).
  static func make(test: String = #function) throws -> PrivateCluster? {
    guard geteuid() == 0 else {
      print("SKIP \(test): needs root to run PostgreSQL as the postgres user")
      return nil
    }
    let versions =
      (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
    guard
      let version = versions.sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending })
        .last,
      FileManager.default.fileExists(atPath: "/usr/lib/postgresql/\(version)/bin/initdb")
    else {
      print("SKIP \(test): no PostgreSQL server binaries under /usr/lib/postgresql")
      return nil
    }
    let directory = "/tmp/presence-pg-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let cluster = PrivateCluster(
      directory: directory, port: try freeLoopbackPort(),
      bin: "/usr/lib/postgresql/\(version)/bin")
    try run("/bin/chown", ["postgres:postgres", directory])
    try cluster.asPostgres(
      "initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "--no-sync"])
    return cluster
  }

  func start() throws {
    try asPostgres(
      "pg_ctl",
      [
        "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "30",
        "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off", "start",
      ])
  }

  func stop() throws {
    try asPostgres("pg_ctl", ["-D", "\(directory)/data", "-w", "-m", "fast", "stop"])
  }

  func destroy() {
    _ = try? asPostgres("pg_ctl", ["-D", "\(directory)/data", "-w", "-m", "immediate", "stop"])
    try? FileManager.default.removeItem(atPath: directory)
  }

  private func asPostgres(_ tool: String, _ arguments: [String]) throws {
    // From /: the postgres user may not be allowed into the test's working directory.
    try Self.run(
      "/usr/bin/env", ["-C", "/", "/usr/sbin/runuser", "-u", "postgres", "--", "\(bin)/\(tool)"]
        + arguments)
  }

  /// Runs a command to completion with posix_spawn and waitpid (Foundation's Process can
  /// miss the exit of a child whose own child daemonizes, as `pg_ctl start` does).
  private static func run(_ executable: String, _ arguments: [String]) throws {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
      guard errno == EINTR else { throw POSIXError(.ECHILD) }
    }
    // Exited normally with status 0 (WIFEXITED && WEXITSTATUS == 0).
    guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
      throw POSIXError(
        .EIO, userInfo: [NSLocalizedDescriptionKey: "\(executable) \(arguments) failed: \(status)"])
    }
  }
}

@Suite("PostgreSQL outages")
struct PostgresOutageTests {
  static let t0: Int64 = 1_790_000_000_000

  @Test func unreachableDatabaseFailsFastAsUnavailable() async throws {
    let port = try freeLoopbackPort()
    let store = try await makePresenceStore(
      url: "postgres://u:p@127.0.0.1:\(port)/db?operation_timeout_ms=500&connect_timeout=1",
      logger: quietLogger)
    try await running(store) { store in
      let clock = ContinuousClock()
      let start = clock.now
      let error = await #expect(throws: PresenceStoreError.self) {
        try await store.countOnline(sinceMillis: 0)
      }
      #expect(error?.code == .unavailable)
      // Fails fast (operation timeout 500 ms) rather than hanging; the bound is loose so that
      // slow builds (ThreadSanitizer, a loaded CI host) do not make this a timing test.
      #expect(start.duration(to: clock.now) < .seconds(8))
    }
  }

  @Test func recoversAfterTheServerRestarts() async throws {
    guard let cluster = try PrivateCluster.make() else { return }
    defer { cluster.destroy() }
    try cluster.start()
    let store = try await makePresenceStore(
      url: cluster.url + "?operation_timeout_ms=1000&connect_timeout=1", logger: quietLogger)
    try await running(store) { store in
      try await store.record([PresenceRecord(userID: "before", lastSeenMillis: Self.t0)])
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 1)

      try cluster.stop()
      // During the outage every call fails, quickly, with .unavailable.
      let clock = ContinuousClock()
      for _ in 0..<3 {
        let start = clock.now
        let error = await #expect(throws: PresenceStoreError.self) {
          try await store.record([PresenceRecord(userID: "during", lastSeenMillis: Self.t0)])
        }
        #expect(error?.code == .unavailable)
        // Fails fast (operation timeout 500 ms) rather than hanging; the bound is loose so that
      // slow builds (ThreadSanitizer, a loaded CI host) do not make this a timing test.
      #expect(start.duration(to: clock.now) < .seconds(8))
      }

      try cluster.start()
      // Back without any help: the pool reconnects on its own.
      let deadline = clock.now.advanced(by: .seconds(20))
      var recovered = false
      while clock.now < deadline {
        do {
          try await store.record([PresenceRecord(userID: "after", lastSeenMillis: Self.t0)])
          recovered = true
          break
        } catch let error as PresenceStoreError where error.code == .unavailable {
          try await Task.sleep(for: .milliseconds(200))
        }
      }
      #expect(recovered)
      #expect(try await store.countOnline(sinceMillis: Self.t0) == 2)
    }
  }
}
