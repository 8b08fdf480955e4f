internal import Foundation

#if canImport(Glibc)
  internal import Glibc
#endif

/// A throwaway PostgreSQL cluster of our own (initdb in a temporary directory, run as the
/// `postgres` user), so a test can stop and start the server without disturbing the shared
/// one that other tests use.
///
/// Every command is awaited without holding a thread: tests run servers in the same process,
/// on a cooperative pool of one thread per core.
public struct PrivateCluster: Sendable {
  public let directory: String
  public let port: Int
  let bin: String

  public var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

  /// Runs `body` with a fresh, started cluster, and destroys the cluster afterwards, also when
  /// `body` throws. Where this cannot run (not root, no PostgreSQL installed) it prints why
  /// and returns without running `body`.
  public static func withCluster(
    test: String = #function, _ body: (PrivateCluster) async throws -> Void
  ) async throws {
    guard let cluster = try await make(test: test) else { return }
    do {
      try await cluster.start()
      try await body(cluster)
    } catch {
      await cluster.destroy()
      throw error
    }
    await cluster.destroy()
  }

  /// Nil, with a printed reason, where this cannot run (not root, no PostgreSQL installed).
  static func make(test: String) async throws -> PrivateCluster? {
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
    try await run("/bin/chown", ["postgres:postgres", directory])
    try await cluster.asPostgres(
      "initdb", ["-D", "\(directory)/data", "-A", "trust", "-U", "postgres", "--no-sync"])
    return cluster
  }

  public func start() async throws {
    try await asPostgres(
      "pg_ctl",
      [
        "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "30",
        "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off", "start",
      ])
  }

  public func stop() async throws {
    try await asPostgres("pg_ctl", ["-D", "\(directory)/data", "-w", "-m", "fast", "stop"])
  }

  func destroy() async {
    _ = try? await asPostgres(
      "pg_ctl", ["-D", "\(directory)/data", "-w", "-m", "immediate", "stop"])
    try? FileManager.default.removeItem(atPath: directory)
  }

  private func asPostgres(_ tool: String, _ arguments: [String]) async throws {
    // From /: the postgres user may not be allowed into the test's working directory.
    try await Self.run(
      "/usr/bin/env",
      ["-C", "/", "/usr/sbin/runuser", "-u", "postgres", "--", "\(bin)/\(tool)"]
        + arguments)
  }

  /// Runs a command to completion, polling waitpid with WNOHANG: a blocking waitpid would
  /// hold a thread of the cooperative pool, and Foundation's Process can miss the exit of a
  /// child whose own child daemonizes (as `pg_ctl start` does).
  private static func run(_ executable: String, _ arguments: [String]) async throws {
    let pid = try spawn(executable, arguments)
    var status: Int32 = 0
    while true {
      let reaped = waitpid(pid, &status, WNOHANG)
      if reaped == pid { break }
      // 0: still running.
      guard reaped == 0 || errno == EINTR else { throw POSIXError(.ECHILD) }
      try await Task.sleep(for: .milliseconds(20))
    }
    // Exited normally with status 0 (WIFEXITED && WEXITSTATUS == 0).
    guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
      throw POSIXError(
        .EIO, userInfo: [NSLocalizedDescriptionKey: "\(executable) \(arguments) failed: \(status)"])
    }
  }

  /// Starts a command with posix_spawn, its output discarded.
  private static func spawn(_ executable: String, _ arguments: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    // Nothing else of ours: `pg_ctl start` leaves a server running that would hold, for its
    // whole life, any descriptor of this process that is not close-on-exec, such as the socket
    // through which Foundation's Process learns that a child another test runs has exited.
    guard closeFrom(&actions, 3) == 0 else { throw POSIXError(.ENOSYS) }
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EIO) }
    return pid
  }

  /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), looked up at run time: the
  /// Glibc module leaves it out (it is declared for `_GNU_SOURCE` only).
  private static func closeFrom(
    _ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ lowest: Int32
  ) -> Int32 {
    typealias Actions = UnsafeMutablePointer<posix_spawn_file_actions_t>
    typealias AddCloseFrom = @convention(c) (Actions, Int32) -> Int32
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return -1 }
    return unsafeBitCast(symbol, to: AddCloseFrom.self)(actions, lowest)
  }
}
