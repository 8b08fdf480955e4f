import Foundation
import TestSupport
import Testing

/// The real `jobctl` binary, run as a user would.
@Suite("jobctl", .serialized, .requires(.product("jobctl")))
struct CLITests {
  static let jobctl = builtProduct("jobctl")

  func jobctl(
    _ arguments: [String], pki: TestPKI, port: Int, user: String = "admin"
  ) async throws -> ProcessResult {
    var environment = ProcessInfo.processInfo.environment
    environment["JOBCTL_DIR"] = pki.directory
    environment["JOBCTL_SERVER"] = "127.0.0.1:\(port)"
    environment["JOBCTL_USER"] = user
    // Each call's deadline (10 s by default) as a bound for a loaded machine: `jobctl list`
    // missed 10 s twice in three runs of the whole suite beside `stress-ng --cpu 2`.
    environment["JOBCTL_TIMEOUT"] = "30"
    return try await runProcess(
      Self.jobctl, arguments, environment: environment, timeout: .seconds(60))
  }

  @Test("jobctl run -- sh -c 'echo hi; exit 3' prints hi and exits 3", .requires(.cgroups))
  func runExitCode() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let result = try await jobctl(
        ["run", "--", "sh", "-c", "echo hi; exit 3"], pki: pki, port: port)
      #expect(result.stdout == "hi\n")
      #expect(result.status == 3, "\(result.stderr)")
      let killed = try await jobctl(["run", "--", "sh", "-c", "kill -9 $$"], pki: pki, port: port)
      #expect(killed.status == 128 + 9)
      let started = try await jobctl(["start", "--", "true"], pki: pki, port: port, user: "alice")
      #expect(started.status == 0)
      let id = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(UUID(uuidString: id) != nil)
      // Another user's job: the same one-line error as a missing job.
      let hidden = try await jobctl(["status", id], pki: pki, port: port, user: "bob")
      #expect(hidden.status != 0)
      #expect(
        hidden.stderr == "jobctl: error: \(RetentionServerTests.expectedMessage(id))\n")
      let json = try await jobctl(["status", "--output", "json", id], pki: pki, port: port)
      #expect(json.status == 0)
      #expect(json.stdout.contains("\"owner\" : \"alice\""))
    }
  }

  @Test(
    "unknown job id, bad flags, unreachable server, wrong CA, expired certificate: one line, non-zero",
    .requires(.cgroups))
  func oneLineErrors() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    let missing = UUID().uuidString.lowercased()
    // Nothing listens on port 1.
    Self.check(
      try await jobctl(["list"], pki: pki, port: 1), "cannot reach the job worker at 127.0.0.1:1")
    Self.check(
      try await jobctl(["list", "--bogus"], pki: pki, port: 1), "Unknown option '--bogus'")
    Self.check(try await jobctl(["list"], pki: pki, port: 1, user: "expired"), "expired on")
    Self.check(try await jobctl(["list"], pki: pki, port: 1, user: "nobody"), "jobctl certs init")
    try await withWhoAmIServer(pki: pki) { port, _ in
      Self.check(
        try await jobctl(["list", "--ca", pki.directory + "/other-ca.pem"], pki: pki, port: port),
        "not signed by")
      Self.check(
        try await jobctl(["list"], pki: pki, port: port, user: "mallory"),
        "server does not accept client certificate")
    }
    try await withJobWorker(pki: pki) { port, _ in
      Self.check(
        try await jobctl(["status", missing], pki: pki, port: port), "job \(missing) not found")
      Self.check(try await jobctl(["stop", "not-a-uuid"], pki: pki, port: port), "is not a UUID")
    }
  }

  @Test("certs init writes a CA, server and clients with 0600 keys, and refuses to replace the CA")
  func certsInit() async throws {
    let directory = NSTemporaryDirectory() + "jobctl-certs-\(UUID().uuidString)/nested"
    defer { try? FileManager.default.removeItem(atPath: directory + "/..") }
    var environment = ProcessInfo.processInfo.environment
    environment["JOBCTL_DIR"] = directory
    let first = try await runProcess(Self.jobctl, ["certs", "init"], environment: environment)
    #expect(first.status == 0, "\(first.stderr)")
    for name in ["ca", "server", "admin", "alice"] {
      let key = try FileManager.default.attributesOfItem(atPath: "\(directory)/\(name)-key.pem")
      #expect((key[.posixPermissions] as? Int) == 0o600)
      #expect(FileManager.default.fileExists(atPath: "\(directory)/\(name).pem"))
    }
    let again = try await runProcess(Self.jobctl, ["certs", "init"], environment: environment)
    #expect(again.status != 0)
    #expect(again.stderr.contains("--force"))
    let issue = try await runProcess(
      Self.jobctl, ["certs", "issue", "carol", "--role", "admin"], environment: environment)
    #expect(issue.status == 0, "\(issue.stderr)")
    #expect(FileManager.default.fileExists(atPath: "\(directory)/carol-key.pem"))
    let bad = try await runProcess(
      Self.jobctl, ["certs", "issue", "carol", "--role", "root"], environment: environment)
    #expect(bad.status == 64)
  }

  static func check(
    _ result: ProcessResult, _ needle: String, sourceLocation: SourceLocation = #_sourceLocation
  ) {
    #expect(result.status != 0, sourceLocation: sourceLocation)
    #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
    #expect(
      result.stderr.hasSuffix("\n") && result.stderr.dropLast().contains("\n") == false
        || needle == "Usage", "\(result.stderr)", sourceLocation: sourceLocation)
    #expect(result.stderr.contains(needle), "\(result.stderr)", sourceLocation: sourceLocation)
  }
}
