internal import Foundation
public import Subprocess
internal import Synchronization
internal import SystemPackage

#if canImport(Glibc)
  internal import Glibc
#endif

/// What a program printed and how it ended.
public struct ProcessResult: Sendable {
  /// The exit code, or 128 + the signal number when a signal ended the program (as a shell
  /// reports it).
  public var status: Int32
  public var stdout: String
  public var stderr: String

  /// Standard output followed by standard error, for checks that do not care which.
  public var output: String { stdout + stderr }
}

/// Why a program could not be run to completion.
public struct ProcessError: Error, CustomStringConvertible {
  public var description: String
}

/// Runs `executable` to completion and returns what it printed, decoded leniently: invalid
/// UTF-8 is repaired, not fatal (`openssl s_client` echoes binary HTTP/2 frames).
///
/// Built on swift-subprocess, so waiting never holds a thread of the cooperative pool (tests
/// run servers in the same process, on one pool thread per core). After `timeout` the
/// program is killed (SIGKILL): the result then has status 137 and what it printed so far.
///
/// - Parameter capture: `false` discards the output instead of collecting it: needed for a
///   program that leaves a daemon behind holding its output open (`pg_ctl start`), because
///   collecting waits for the end of the output.
public func runProcess(
  _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
  timeout: Duration = .seconds(30), capture: Bool = true
) async throws -> ProcessResult {
  let environment: Environment =
    environment.map { values in
      var keyed: [Environment.Key: String] = [:]
      for (key, value) in values { keyed[Environment.Key(stringLiteral: key)] = value }
      return .custom(keyed)
    } ?? .inherit
  let executable = Executable.path(FilePath(executable))
  guard capture else {
    let status = try await withThrowingTaskGroup(of: TerminationStatus?.self) { group in
      group.addTask {
        try await Subprocess.run(
          executable, arguments: Arguments(arguments), environment: environment,
          output: .discarded, error: .discarded
        ).terminationStatus
      }
      group.addTask {
        try? await Task.sleep(for: timeout)
        return nil
      }
      // The program or the timer, whichever ends first; cancelling a run kills its program.
      let first = try await group.next()!
      group.cancelAll()
      return first
    }
    guard let status else {
      throw ProcessError(description: "\(executable) \(arguments) still running after \(timeout)")
    }
    return ProcessResult(status: status.shellStatus, stdout: "", stderr: "")
  }
  let result = try await Subprocess.run(
    executable, arguments: Arguments(arguments), environment: environment, input: .none,
    output: .sequence, error: .sequence
  ) { execution in
    try await killing(execution.processIdentifier.value, after: timeout) {
      async let stdout = collect(execution.standardOutput)
      async let stderr = collect(execution.standardError)
      return try await (stdout, stderr)
    }
  }
  let (stdout, stderr) = result.closureResult
  return ProcessResult(
    status: result.terminationStatus.shellStatus,
    stdout: String(decoding: stdout, as: UTF8.self),
    stderr: String(decoding: stderr, as: UTF8.self))
}

/// Runs `body`; if it is still running after `timeout`, SIGKILLs `pid` (which ends the
/// program's output, and so `body`).
private func killing<T: Sendable>(
  _ pid: Int32, after timeout: Duration, _ body: () async throws -> T
) async throws -> T {
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask {
      // Cancelled (the body finished first): the program has ended, nothing to kill.
      guard (try? await Task.sleep(for: timeout)) != nil else { return }
      kill(pid, SIGKILL)
    }
    defer { group.cancelAll() }
    return try await body()
  }
}

/// Every byte of one output stream, in order.
private func collect(_ output: SubprocessOutputSequence) async throws -> [UInt8] {
  var bytes: [UInt8] = []
  for try await buffer in output {
    buffer.withUnsafeBytes { bytes.append(contentsOf: $0) }
  }
  return bytes
}

extension TerminationStatus {
  /// As a shell reports it: the exit code, or 128 + the signal number.
  public var shellStatus: Int32 {
    switch self {
    case .exited(let code): code
    case .signaled(let signal): 128 + signal
    }
  }
}

/// A program running in the background for the duration of a test, e.g. a server binary,
/// with its standard output and error in ``logPath``. A test may signal it (e.g. SIGKILL, as
/// `kill -9` would) and await its end; nothing blocks a pool thread.
public final class BackgroundProcess: Sendable {
  /// Standard output and error, interleaved, for a failure message.
  public let logPath: String
  /// The process id, for tools that take one (`prlimit`, `/proc`).
  public let pid: Int32
  private let exit: ExitRecord
  private let release: AsyncStream<Void>.Continuation

  fileprivate init(
    logPath: String, pid: Int32, exit: ExitRecord, release: AsyncStream<Void>.Continuation
  ) {
    self.logPath = logPath
    self.pid = pid
    self.exit = exit
    self.release = release
  }

  /// What the program has written so far.
  public var log: String {
    String(decoding: FileManager.default.contents(atPath: logPath) ?? Data(), as: UTF8.self)
  }

  /// Sends `signal`, e.g. SIGTERM for a graceful stop.
  public func signal(_ signal: Int32) {
    Glibc.kill(pid, signal)
  }

  /// Waits until the program has ended (at most `timeout`; nil if it is still running then)
  /// and returns its status as a shell reports it.
  @discardableResult
  public func waitForExit(timeout: Duration = .seconds(30)) async -> Int32? {
    release.finish()
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let status = exit.status { return status }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return exit.status
  }

  /// SIGKILL, then wait until it has ended.
  public func kill() async {
    signal(SIGKILL)
    await waitForExit()
  }
}

/// How a background program ended, once it has (set by the task that runs it).
private final class ExitRecord: Sendable {
  private let value = Mutex<Int32?>(nil)

  var status: Int32? {
    get { value.withLock { $0 } }
    set { value.withLock { $0 = newValue } }
  }
}

/// Runs `executable` in the background while `body` runs, then kills it (SIGKILL) and waits
/// for its end. The log file stays behind when `body` throws, so that the failure can be
/// explained; it is removed otherwise.
public func withBackgroundProcess<T: Sendable>(
  _ executable: String, _ arguments: [String],
  _ body: (BackgroundProcess) async throws -> T
) async throws -> T {
  let logPath =
    FileManager.default.temporaryDirectory
    .appendingPathComponent("background-\(UUID().uuidString).log").path
  let fd = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw ProcessError(description: "cannot create \(logPath): errno \(errno)") }
  let errorFD = dup(fd)
  guard errorFD >= 0 else {
    close(fd)
    throw ProcessError(description: "dup: errno \(errno)")
  }
  let (started, starting) = AsyncStream.makeStream(of: Int32.self)
  let (released, release) = AsyncStream.makeStream(of: Void.self)
  let exit = ExitRecord()
  return try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask {
      defer { starting.finish() }
      let result = try await Subprocess.run(
        .path(FilePath(executable)), arguments: Arguments(arguments),
        input: .none,
        output: .fileDescriptor(FileDescriptor(rawValue: fd), closeAfterSpawningProcess: true),
        error: .fileDescriptor(FileDescriptor(rawValue: errorFD), closeAfterSpawningProcess: true)
      ) { execution in
        starting.yield(execution.processIdentifier.value)
        // The run awaits the program's end once this closure returns: hold it until the
        // test asks for that end.
        for await _ in released {}
      }
      exit.status = result.terminationStatus.shellStatus
    }
    var pid: Int32?
    for await value in started {
      pid = value
      break
    }
    guard let pid else {
      release.finish()
      try await group.waitForAll()
      throw ProcessError(description: "\(executable) did not start")
    }
    let process = BackgroundProcess(
      logPath: logPath, pid: pid, exit: exit, release: release)
    do {
      let result = try await body(process)
      await process.kill()
      try await group.waitForAll()
      try? FileManager.default.removeItem(atPath: logPath)
      return result
    } catch {
      await process.kill()
      try? await group.waitForAll()
      throw error
    }
  }
}
