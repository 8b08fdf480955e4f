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
  /// `body` throws. Needs root and PostgreSQL's server binaries: gate the test with
  /// `.requires(.postgresServer)`.
  public static func withCluster(_ body: (PrivateCluster) async throws -> Void) async throws {
    let cluster = try await make()
    do {
      try await cluster.start()
      try await body(cluster)
    } catch {
      await cluster.destroy()
      throw error
    }
    await cluster.destroy()
  }

  /// An initialised, stopped cluster in a temporary directory.
  static func make() async throws -> PrivateCluster {
    guard Requirement.postgresServer.isMet, let bin = TestEnvironment.postgresBinaries else {
      throw ProcessError(description: "\(Requirement.postgresServer.reason)")
    }
    let directory = "/tmp/presence-pg-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let cluster = PrivateCluster(
      directory: directory, port: try freeLoopbackPort(), bin: bin)
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

  /// Runs a command to completion, its output discarded: `pg_ctl start` leaves a server
  /// running that would hold a captured output open for its whole life.
  private static func run(_ executable: String, _ arguments: [String]) async throws {
    let result = try await runProcess(executable, arguments, timeout: .seconds(60), capture: false)
    guard result.status == 0 else {
      throw ProcessError(description: "\(executable) \(arguments) failed: status \(result.status)")
    }
  }
}
