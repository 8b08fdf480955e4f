import CJobInit
import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

/// PID 1 of every job is the `jobinit` executable, exec'd by the worker's cloned child, and
/// not a copy of the worker (issue 11, item 5: a job and `ps` on the host saw the worker's
/// whole command line, and every init kept a copy-on-write copy of the worker).
@Suite("The jobinit executable")
struct JobInitTests {
  static let jobinit = builtProduct("jobinit")

  /// Clones an init for `/bin/true` with `Launcher.spawn` alone, without a manager; it waits
  /// for its release (`Launcher.abandon` ends it).
  static func launchTrue() throws -> Launcher.Launched {
    try Launcher.spawn(
      Launcher.Request(
        initExecutable: try InitExecutable(path: jobinit),
        program: try ProgramSearch(command: "/bin/true", environment: []), arguments: [],
        environment: [], workingDirectory: "/", hostname: "job-test", scratchBytes: 1 << 20,
        uid: 65534, gid: 65534))
  }

  /// Inside the job, PID 1's command line is `jobinit` and nothing else: not the worker's
  /// arguments (here the test bundle's, `--testing-library …`).
  @Test(.requires(.cgroups)) func jobSeesOnlyJobinitAsItsInit() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run("cat", "/proc/1/cmdline")
      #expect(status.state == .exited(code: 0))
      #expect(output == "jobinit\0")
      #expect(!output.contains(CommandLine.arguments[0]))
    }
  }

  /// On the host, as `ps` shows it: the init's command line and name are `jobinit`, it runs
  /// the configured file, its environment is empty (the worker's never reaches it) and it
  /// holds only /dev/null (on 0, and on 1 and 2 once the program has the output pipe) and the
  /// status pipe: no memfd, no release pipe, nothing of the worker.
  @Test(.requires(.cgroups)) func hostSeesJobinit() async throws {
    try await withManager { manager in
      let started = try await manager.start(JobSpec(command: "sleep", arguments: ["600"]))
      let job = try #require(manager.job(started.id))
      let proc = "/proc/\(job.pid)"
      // The worker's thread resumes when the exec has replaced the child's memory (vfork's
    // completion), a moment before the kernel has placed the new program's arguments: under
    // load, /proc/PID/cmdline could still read empty then (seen once in CI).
    #expect(await eventually { FileSystem.read(proc + "/cmdline") == "jobinit\0" })
      #expect(FileSystem.read(proc + "/comm") == "jobinit\n")
      #expect(FileSystem.read(proc + "/environ") == "")
      #expect(
        link(proc + "/exe") == URL(fileURLWithPath: Self.jobinit).resolvingSymlinksInPath().path)
      let descriptors = FileSystem.entries(proc + "/fd").compactMap { Int($0) }.sorted()
      #expect(descriptors == [0, 1, 2, Int(CJOBINIT_FD_STATUS)])
      for fd in 0...2 { #expect(link(proc + "/fd/\(fd)") == "/dev/null") }
      #expect(link(proc + "/fd/\(CJOBINIT_FD_STATUS)")?.hasPrefix("pipe:") == true)
      _ = try await manager.stop(started.id)
    }
  }

  /// A launch lends its child one set of the worker's launch slots (low descriptor numbers,
  /// the only part of the worker's descriptor table that the child copies) and gives it back
  /// when the clone returns: then every slot holds the placeholder (/dev/null) again, not the
  /// job's pipes, whose write ends the worker must not keep open.
  @Test(.requires(.root), .requires(.product("jobinit")))
  func launchSlotsAreGivenBack() async throws {
    Launcher.reserveSlots()
    let launched = try Self.launchTrue()
    defer { Launcher.abandon(launched) }
    let slots = Launcher.slotNumbers()
    #expect(slots.count == 21)  // the placeholder and four sets of five
    // Launches of other tests hold a set each, only until their clone returns.
    #expect(await eventually { slots.allSatisfy { link("/proc/self/fd/\($0)") == "/dev/null" } })
    // The launch's child, waiting for its release, holds only its own descriptors: 0-2, the
    // status pipe, the job and the release socket.
    let descriptors = FileSystem.entries("/proc/\(launched.pid)/fd").compactMap { Int32($0) }
    #expect(descriptors.sorted() == [0, 1, 2, 3, 4, 5])
  }

  /// The clone shares the worker's memory and suspends the calling thread until the child's
  /// exec (CLONE_VM | CLONE_VFORK): when `Launcher.spawn` returns, before the release, the
  /// child already is `jobinit`, waiting, with a few pages of its own, not a copy-on-write
  /// copy of the worker's (here the test bundle's) address space. Before, the child was the
  /// worker's copy until its release.
  @Test(.requires(.root), .requires(.product("jobinit")))
  func childIsJobinitBeforeItsRelease() async throws {
    let launched = try Self.launchTrue()
    defer { Launcher.abandon(launched) }
    let proc = "/proc/\(launched.pid)"
    #expect(
      link(proc + "/exe") == URL(fileURLWithPath: Self.jobinit).resolvingSymlinksInPath().path)
    // The worker's thread resumes when the exec has replaced the child's memory (vfork's
    // completion), a moment before the kernel has placed the new program's arguments: under
    // load, /proc/PID/cmdline could still read empty then (seen once in CI).
    #expect(await eventually { FileSystem.read(proc + "/cmdline") == "jobinit\0" })
    let status = FileSystem.read(proc + "/status") ?? ""
    let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
      .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) }
    // A static executable waiting on a socket: well under 1 MiB (Benchmarks/job-init-memory.sh
    // measures an init at 44-52 KiB private and ~110 KiB PSS, nothing that load changes);
    // a copy of the worker (here the test bundle) would be tens of MiB.
    #expect(rss.map { $0 < 1024 } == true, "\(status)")
  }

  /// A file that is not a program where jobinit should be: the start fails naming the step,
  /// and nothing is left.
  @Test(.requires(.cgroups)) func brokenInitIsAStartError() async throws {
    let path = try temporaryFile(contents: "not a program\n", mode: 0o755)
    defer { unlink(path) }
    try await withManager(initExecutable: path) { manager in
      await #expect {
        _ = try await manager.start(JobSpec(command: "true"))
      } throws: { error in
        let error = error as? JobError
        return error?.code == .failedToStart
          && error?.message == "executing the job's init (jobinit): Exec format error"
      }
      // Nothing but the next job's output file, which the manager makes ahead.
      let entries = Set(FileSystem.entries(manager.configuration.dataDirectory + "/jobs"))
      let spare = manager.spareOutputID.map { [$0.description] } ?? []
      #expect(entries.subtracting(spare).isEmpty)
      #expect(manager.list().isEmpty)
    }
  }

  /// Missing, not executable, not a file: refused when the manager starts, with the path and
  /// what to do, instead of failing every job.
  @Test func unusableInitIsRefusedUpFront() throws {
    let missing = "/nonexistent-\(UUID().uuidString)/jobinit"
    let notExecutable = try temporaryFile(contents: "", mode: 0o644)
    defer { unlink(notExecutable) }
    for (path, reason) in [
      (missing, "No such file or directory"), (notExecutable, "Permission denied"),
      (NSTemporaryDirectory(), "Permission denied"),
    ] {
      #expect {
        _ = try InitExecutable(path: path)
      } throws: { error in
        let error = error as? JobError
        return error?.code == .unavailable
          && error?.message
            == "cannot use \(path) as the jobs' init: \(reason); build it (swift build "
            + "--product jobinit) and install it next to the job worker, or give its path "
            + "(JobManager.Configuration.initExecutable, jobworker --jobinit)"
      }
    }
  }

  /// The default is `jobinit` beside the running executable: here the test bundle, which
  /// `swift build` puts next to it.
  @Test(.requires(.product("jobinit"))) func defaultIsNextToTheExecutable() throws {
    #expect(InitExecutable.nextToExecutable() == Self.jobinit)
    #expect(try InitExecutable(path: nil).path == Self.jobinit)
  }

  /// Run by hand, without the worker's descriptors, it says what it is and exits 2.
  @Test(.requires(.product("jobinit"))) func runByHand() async throws {
    let result = try await runProcess(Self.jobinit, [])
    #expect(result.status == 2)
    #expect(result.stderr.hasPrefix("jobinit: the init of a job worker's jobs"))
  }

  /// The job travels in a sealed memfd and decodes to what was encoded; anything else
  /// (another version, a truncated or padded encoding) is refused, never misread.
  @Test func encodedJobRoundTrips() throws {
    let candidates = ["/usr/local/bin/x", "/usr/bin/x"]
    let arguments = ["x", "", "two words", "ünïcode"]
    let environment = ["PATH=/usr/bin", "EMPTY="]
    let fixed = ["/work", "job-12345678", "size=4096,mode=1777"]
    let encoded = try withCStrings(candidates, arguments, environment, fixed) { c, a, e, f in
      var job = cjobinit_job(
        candidates: c, argv: a, envp: e, working_directory: f[0], hostname: f[1],
        scratch_options: f[2], uid: 65534, gid: 65533)
      let fd = cjobinit_job_encode(&job)
      try #require(fd >= 0)
      defer { close(fd) }
      var byte: UInt8 = 0
      #expect(write(fd, &byte, 1) == -1 && errno == EPERM, "sealed against writes")
      return readAll(fd)
    }

    let decoded = try #require(decode(encoded))
    #expect(decoded.strings == candidates + ["|"] + arguments + ["|"] + environment + ["|"] + fixed)
    #expect(decoded.uid == 65534 && decoded.gid == 65533)

    var otherVersion = encoded
    otherVersion[4] &+= 1
    #expect(decode(otherVersion) == nil)
    #expect(decode(Array(encoded.dropLast())) == nil)
    #expect(decode(encoded + [0]) == nil)
  }
}

private func link(_ path: String) -> String? {
  var buffer = [CChar](repeating: 0, count: 4096)
  let n = readlink(path, &buffer, buffer.count - 1)
  guard n > 0 else { return nil }
  return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Written through a close-on-exec descriptor: a program that another test spawns meanwhile
/// would otherwise inherit it open for writing, and executing the file then fails with
/// `Text file busy` (ETXTBSY) for as long as that program runs (seen once in 5 full runs).
private func temporaryFile(contents: String, mode: mode_t) throws -> String {
  let path = NSTemporaryDirectory() + "jobinit-test-\(UUID().uuidString)"
  let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
  try #require(fd >= 0)
  defer { close(fd) }
  let bytes = Array(contents.utf8)
  try #require(write(fd, bytes, bytes.count) == bytes.count)
  try #require(fchmod(fd, mode) == 0)
  return path
}

private func readAll(_ fd: Int32) -> [UInt8] {
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = read(fd, &chunk, chunk.count)
    guard n > 0 else { return bytes }
    bytes += chunk.prefix(n)
  }
}

/// The decoded job's strings, each vector followed by "|", then the fixed strings.
private struct DecodedJob {
  var strings: [String]
  var uid: uid_t
  var gid: gid_t
}

private func decode(_ encoded: [UInt8]) -> DecodedJob? {
  encoded.withUnsafeBytes { raw -> DecodedJob? in
    let buffer = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
    let slots = cjobinit_job_vector_slots(buffer, raw.count)
    guard slots > 0 else { return nil }
    var vectors = [UnsafeMutablePointer<CChar>?](repeating: nil, count: slots)
    var job = cjobinit_job()
    guard cjobinit_job_decode(buffer, raw.count, &vectors, slots, &job) == 0 else { return nil }
    func strings(_ vector: UnsafePointer<UnsafeMutablePointer<CChar>?>) -> [String] {
      var result: [String] = []
      var index = 0
      while let string = vector[index] {
        result.append(String(cString: string))
        index += 1
      }
      return result + ["|"]
    }
    return DecodedJob(
      strings: strings(job.candidates) + strings(job.argv) + strings(job.envp)
        + [job.working_directory, job.hostname, job.scratch_options].map { String(cString: $0!) },
      uid: job.uid, gid: job.gid)
  }
}

/// Runs `body` with NULL-terminated C vectors of the first three lists and C strings of the
/// fourth.
private func withCStrings<R>(
  _ first: [String], _ second: [String], _ third: [String], _ fixed: [String],
  _ body: (
    UnsafePointer<UnsafeMutablePointer<CChar>?>, UnsafePointer<UnsafeMutablePointer<CChar>?>,
    UnsafePointer<UnsafeMutablePointer<CChar>?>, [UnsafePointer<CChar>]
  ) throws -> R
) rethrows -> R {
  let owned = (first + second + third + fixed).map { strdup($0)! }
  defer { for pointer in owned { free(pointer) } }
  var vectors: [[UnsafeMutablePointer<CChar>?]] = []
  var offset = 0
  for list in [first, second, third] {
    vectors.append(owned[offset..<offset + list.count].map { $0 } + [nil])
    offset += list.count
  }
  let fixedPointers = owned[offset...].map { UnsafePointer($0) }
  return try vectors[0].withUnsafeBufferPointer { a in
    try vectors[1].withUnsafeBufferPointer { b in
      try vectors[2].withUnsafeBufferPointer { c in
        try body(a.baseAddress!, b.baseAddress!, c.baseAddress!, fixedPointers)
      }
    }
  }
}
