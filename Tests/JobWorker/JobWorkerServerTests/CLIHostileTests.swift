import Foundation
import TestSupport
import Testing

/// `jobctl` against hostile users (issue 11): what other users put in their jobs must not reach
/// an admin's terminal, large output must not break or bloat the client, bad input gets a clear
/// refusal. Part of the serialized `jobctl` suite.
extension CLITests {
  /// A command that retitles the terminal window, rings the bell and clears the screen, plus a
  /// second line that would forge a row of `jobctl list`.
  static let hostileArguments = [
    "bash", "-c", "printf '\\x1b]0;pwned\\x07\\x1b[2J'; echo done",
    "\u{1B}]0;pwned\u{07}\u{1B}[2J\u{9B}31m",
    "x\n00000000-0000-0000-0000-000000000000  root  running  2026-01-01T00:00:00Z  fake",
  ]

  @Test(
    "list, status and errors escape control characters; JSON stays exact", .requires(.cgroups))
  func terminalInjection() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let run = try await jobctl(["run", "--"] + Self.hostileArguments, pki: pki, port: port)
      #expect(run.status == 0, "\(run.stderr)")
      // The job's own output is data: `run` and `logs` pass it through byte for byte.
      #expect(run.stdout == "\u{1B}]0;pwned\u{07}\u{1B}[2Jdone\n")
      let list = try await jobctl(["list"], pki: pki, port: port)
      #expect(list.status == 0, "\(list.stderr)")
      Self.expectPrintable(list.stdout)
      let rows = list.stdout.split(separator: "\n")
      #expect(rows.count == 2, "a header and one row: \(list.stdout)")
      #expect(list.stdout.contains("\\e]0;pwned\\a\\e[2J\\u{009B}31m"), "\(list.stdout)")
      #expect(list.stdout.contains("'x\\n00000000-0000"), "\(list.stdout)")
      let id = try #require(rows.last?.split(separator: " ").first.map(String.init))

      let status = try await jobctl(["status", id], pki: pki, port: port)
      #expect(status.status == 0, "\(status.stderr)")
      Self.expectPrintable(status.stdout)
      #expect(status.stdout.contains("bash -c 'printf "), "\(status.stdout)")
      #expect(status.stdout.split(separator: "\n").count == 9, "\(status.stdout)")

      let json = try await jobctl(["status", "--output", "json", id], pki: pki, port: port)
      #expect(json.status == 0, "\(json.stderr)")
      Self.expectPrintable(json.stdout)
      let decoded = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
      // The server reports the resolved path of the program (/usr/bin/bash).
      #expect((decoded?["command"] as? String)?.hasSuffix("/bash") == true)
      #expect(decoded?["args"] as? [String] == Array(Self.hostileArguments.dropFirst()))

      // Errors quote what they were given (here: the job id) escaped as well.
      let error = try await jobctl(["status", "\u{1B}[2J\u{1B}]0;x\u{07}"], pki: pki, port: port)
      Self.check(error, "job id '\\e[2J\\e]0;x\\a' is not a UUID")
      Self.expectPrintable(error.stderr)
      let usage = try await jobctl(["list", "--\u{1B}[2J"], pki: pki, port: port)
      Self.check(usage, "Unknown option '--\\e[2J'")
      Self.expectPrintable(usage.stderr)
    }
  }

  /// Nothing but printable ASCII, non-ASCII letters and newlines between lines.
  static func expectPrintable(
    _ text: String, sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let bad = text.unicodeScalars.filter { scalar in
      scalar != "\n"
        && (scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
          || (0x2028...0x202E).contains(scalar.value))
    }
    #expect(
      bad.isEmpty, "raw control characters \(bad.map(\.value))", sourceLocation: sourceLocation)
  }

  @Test(
    "logs without -f delivers everything to a reader slower than the call deadline",
    .requires(.cgroups))
  func logsOutlivesTheDeadline() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      // 16 MiB: far more than the pipe (64 KiB), the HTTP/2 window (1 MiB) and gRPC's buffer
      // hold together, so most of it is transferred only after the reader wakes up.
      let size = 16 << 20
      let id = try await finishedJob("head -c \(size) /dev/zero", pki: pki, port: port)
      // The reader sleeps 7 s, more than twice the deadline (--timeout 3: connecting and the
      // first response take milliseconds, so 3 s is ample even on a loaded machine).
      let result = try await runProcess(
        "/bin/bash",
        [
          "-c", "\"$0\" logs --timeout 3 \"$1\" | { sleep 7; wc -c; }; exit ${PIPESTATUS[0]}",
          Self.jobctl, id,
        ], environment: Self.environment(pki: pki, port: port))
      #expect(result.status == 0, "\(result.stderr)")
      #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(size)")
      #expect(result.stderr.isEmpty, "\(result.stderr)")
    }
  }

  @Test(
    "logs -f and run outlive the call deadline while the job is quiet", .requires(.cgroups))
  func followOutlivesTheDeadline() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      // Quiet for 7 s, more than twice the deadline (--timeout 3): the deadline covers the
      // server's response headers, which it sends before any output.
      let script = "sleep 7; echo late"
      let started = try await jobctl(["start", "--", "sh", "-c", script], pki: pki, port: port)
      let id = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      async let followed = jobctl(["logs", "-f", "--timeout", "3", id], pki: pki, port: port)
      let run = try await jobctl(
        ["run", "--timeout", "3", "--", "sh", "-c", script], pki: pki, port: port)
      #expect(run.status == 0, "\(run.stderr)")
      #expect(run.stdout == "late\n")
      let logs = try await followed
      #expect(logs.status == 0, "\(logs.stderr)")
      #expect(logs.stdout == "late\n")
    }
  }

  @Test("logs -f against a server that never answers fails at the deadline")
  func followHasAFirstResponseDeadline() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    // Listens but never accepts: the kernel completes TCP connections into the backlog, and
    // the TLS handshake then waits forever. Before, `logs -f` had no deadline at all.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
        bind(fd, raw, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, raw, &length) == 0
      }
    }
    try #require(bound)
    let port = Int(UInt16(bigEndian: address.sin_port))
    let id = UUID().uuidString.lowercased()
    let result = try await jobctl(["logs", "-f", "--timeout", "1", id], pki: pki, port: port)
    Self.check(result, "no answer from the job worker at 127.0.0.1:\(port) within 1")
  }

  @Test(
    "logs with standard output blocked stops reading: memory stays bounded",
    .requires(.cgroups))
  func blockedStandardOutputIsBounded() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, server in
      let size = 48 << 20
      let id = try await finishedJob("head -c \(size) /dev/zero", pki: pki, port: port)
      let directory = pki.directory + "/blocked"
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true)
      // jobctl writes into a FIFO that this script holds open but does not read until the
      // test creates `drain`; then it reads exactly `size` bytes.
      let script = """
        set -u
        mkfifo "$0/out"
        exec 3<>"$0/out"
        "$1" logs "$2" >"$0/out" 3>&- &
        echo $! >"$0/pid"
        while [ ! -e "$0/drain" ]; do sleep 0.05; done
        head -c "$3" <&3 | wc -c
        wait $!
        """
      async let drained = runProcess(
        "/bin/bash", ["-c", script, directory, Self.jobctl, id, "\(size)"],
        environment: Self.environment(pki: pki, port: port), timeout: .seconds(60))
      let pid = try await Self.waitForPID(at: directory + "/pid")
      // The baseline: connected, TLS and gRPC set up, the stream just opened. Anonymous
      // memory only (`RssAnon`): what jobctl allocates. `VmRSS` also counts the pages of the
      // binary's code faulted in as new code paths first run, which made the growth swing by
      // up to 10 MiB with when the baseline was sampled.
      #expect(await eventually { server.service.activeOutputStreams == 1 })
      let startKiB = Self.memoryKiB(pid, "RssAnon")
      // Without flow control the server pushes the whole output into jobctl and its stream
      // ends (within a second here); with it the server's write stays suspended. Either way,
      // give the server 5 s to push what it can (a bound on the test's length, not a latency
      // claim: on a slower machine a buffering client would just hold less of it), sampling
      // jobctl's anonymous memory meanwhile for its peak.
      var peakKiB = startKiB
      _ = await eventually(timeout: .seconds(5)) {
        if let now = Self.memoryKiB(pid, "RssAnon") { peakKiB = max(peakKiB ?? now, now) }
        return server.service.activeOutputStreams == 0
      }
      if let now = Self.memoryKiB(pid, "RssAnon") { peakKiB = max(peakKiB ?? now, now) }
      #expect(FileManager.default.createFile(atPath: directory + "/drain", contents: nil))
      let result = try await drained
      #expect(result.status == 0, "\(result.stderr)")
      #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(size)")
      guard let startKiB, let peakKiB else {
        Issue.record("jobctl (pid \(pid)) ended while its output was blocked: \(result.stderr)")
        return
      }
      // Held while blocked: the 1 MiB HTTP/2 window, gRPC's buffer of 10 messages of up to
      // 255 KiB, up to 1 MiB queued for standard output, the message being written, and the
      // decoder's buffers that pending DATA frames keep alive (16 KiB steps: HTTP2FrameAligner;
      // without it they grew to 1–4 MiB each, and jobctl by 20–45 MiB): about 5 MiB (4.4–5.4
      // MiB measured beside `stress-ng --cpu 2`, 6 runs). 16 MiB leaves three times that for
      // the allocator and a loaded host; a client that buffers the stream holds most of 48 MiB.
      let growthKiB = peakKiB - startKiB
      #expect(growthKiB < 16 * 1024, "jobctl grew from \(startKiB) KiB to \(peakKiB) KiB")
    }
  }

  @Test("requests over the server's limits are refused before sending, naming the limit")
  func oversizedRequests() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    // Nothing listens on port 1: a request that got as far as connecting would fail there.
    let arguments = (0..<2000).map { "argument-\($0)-" + String(repeating: "x", count: 90) }
    Self.check(
      try await jobctl(["run", "--", "echo"] + arguments, pki: pki, port: 1),
      "the job worker accepts at most 64.0 KiB per request")
    // 700 entries of 100 bytes: jobctl's argument parser takes time quadratic in the number
    // of options (2000 `--env` flags: 8 s), so a test of the size check stays small.
    let environment = (0..<700).flatMap {
      ["--env", "E\($0)=" + String(repeating: "v", count: 100)]
    }
    Self.check(
      try await jobctl(["start"] + environment + ["--", "true"], pki: pki, port: 1),
      "the job worker accepts at most 64.0 KiB per request")
    let longID = String(repeating: "a", count: 100_000)
    for command in ["status", "stop", "logs"] {
      Self.check(try await jobctl([command, longID], pki: pki, port: 1), "is not a UUID")
    }
  }

  @Test("--cpu 0, --memory 0, --pids 0 and --pids 1 are refused; --pids 2 runs")
  func zeroLimits() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    for (flags, message) in [
      (["--cpu", "0"], "--cpu must be at least 1"),
      (["--memory", "0"], "--memory must be more than 0"),
      (["--memory", "0K"], "--memory must be more than 0"),
      (["--pids", "0"], "--pids must be at least 2"),
      (["--pids", "1"], "--pids must be at least 2"),
      (["--io-read", "/dev/sda=0"], "the rate must be more than 0"),
    ] {
      let result = try await jobctl(["start"] + flags + ["--", "true"], pki: pki, port: 1)
      Self.check(result, message)
      #expect(result.status == 64)
    }
  }

  @Test("--pids 2 is enough for a job to start and run", .requires(.cgroups))
  func smallestPidsLimitRuns() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki) { port, _ in
      let result = try await jobctl(
        ["run", "--pids", "2", "--", "sh", "-c", "echo ok"], pki: pki, port: port)
      #expect(result.status == 0, "\(result.stderr)")
      #expect(result.stdout == "ok\n")
    }
  }

  // MARK: Helpers

  static func environment(pki: TestPKI, port: Int) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["JOBCTL_DIR"] = pki.directory
    environment["JOBCTL_SERVER"] = "127.0.0.1:\(port)"
    environment["JOBCTL_USER"] = "admin"
    environment["JOBCTL_TIMEOUT"] = "30"  // as in `jobctl(_:pki:port:)`
    return environment
  }

  /// Starts `script` with `sh -c` and waits until the job has ended; returns its id.
  func finishedJob(_ script: String, pki: TestPKI, port: Int) async throws -> String {
    let started = try await jobctl(["start", "--", "sh", "-c", script], pki: pki, port: port)
    #expect(started.status == 0, "\(started.stderr)")
    let id = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let ended = try await eventually(timeout: .seconds(30)) {
      try await jobctl(["status", "--output", "json", id], pki: pki, port: port).stdout
        .contains("\"state\" : \"exited\"")
    }
    #expect(ended, "job \(id) did not end")
    return id
  }

  static func waitForPID(at path: String) async throws -> Int32 {
    var pid: Int32?
    _ = await eventually {
      pid = (try? String(contentsOfFile: path, encoding: .utf8))
        .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
      return pid != nil
    }
    return try #require(pid, "no pid in \(path)")
  }

  /// A memory figure of `/proc/PID/status` in KiB (VmRSS: now; VmHWM: the peak so far).
  static func memoryKiB(_ pid: Int32, _ field: String) -> Int? {
    // read(2) until the end: /proc files report a size of 0, which Foundation readers trust.
    let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let count = read(fd, &buffer, buffer.count)
      if count < 0 && errno == EINTR { continue }
      guard count > 0 else { break }
      bytes += buffer[..<count]
    }
    let status = String(decoding: bytes, as: UTF8.self)
    for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
      // "VmRSS:\t   47072 kB"
      return line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" })
        .first.flatMap { Int($0) }
    }
    return nil
  }
}
