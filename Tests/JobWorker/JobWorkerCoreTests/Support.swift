import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing

@testable import JobWorkerCore

/// Runs `body` with a fresh manager that has its own data directory and cgroup name, so tests
/// can run in parallel; shuts it down and checks that no job cgroup is left. Tests that call
/// it are gated with `.requires(.cgroups)`.
func withManager(
  grace: Duration = .seconds(2), runAsRoot: Bool = false,
  maxOutputBytes: UInt64 = 64 << 20, maxStoredOutputBytes: UInt64 = 1 << 30,
  scratchBytes: UInt64 = 64 << 20, dataDirectory: String? = nil,
  initExecutable: String = builtProduct("jobinit"), logger: Logger = Logger(label: "test"),
  _ body: (JobManager) async throws -> Void
) async throws {
  let name = "jobworker-test-\(UUID().uuidString.prefix(8).lowercased())"
  let directory =
    dataDirectory ?? FileManager.default.temporaryDirectory.appendingPathComponent(name).path
  defer { try? FileManager.default.removeItem(atPath: directory) }
  var configuration = JobManager.Configuration(
    dataDirectory: directory, maxOutputBytesPerJob: maxOutputBytes,
    maxStoredOutputBytes: maxStoredOutputBytes, scratchBytesPerJob: scratchBytes,
    stopGracePeriod: grace, cgroupName: name, initExecutable: initExecutable)
  if runAsRoot {
    configuration.runAsUser = 0
    configuration.runAsGroup = 0
  }
  let manager = try JobManager(configuration: configuration, logger: logger)
  do {
    try await body(manager)
  } catch {
    await manager.shutdown()
    throw error
  }
  await manager.shutdown()
  #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/\(name)"))
}

/// A manager on `configuration` once its instance locks are free. In this test process other
/// tests' managers clone job inits, and a fresh clone holds a copy of every descriptor (the
/// locks' too) until it closes them before exec, so a lock can outlive its owner's shutdown
/// by that moment; production runs one manager per process.
func managerOnceUnlocked(_ configuration: JobManager.Configuration) async throws -> JobManager {
  for _ in 0..<100 {
    do {
      return try JobManager(configuration: configuration, logger: Logger(label: "test"))
    } catch let error as JobError where error.code == .inUse {
      try await Task.sleep(for: .milliseconds(50))
    }
  }
  return try JobManager(configuration: configuration, logger: Logger(label: "test"))
}

extension JobManager {
  /// Starts a job and collects its whole output and final status.
  func run(_ command: String, _ arguments: String..., limits: ResourceLimits = ResourceLimits())
    async throws -> (status: JobStatus, output: String)
  {
    let started = try await start(
      JobSpec(command: command, arguments: arguments, limits: limits, owner: "test"))
    let bytes = try await collect(started.id)
    return (try status(started.id), String(decoding: bytes, as: UTF8.self))
  }

  func collect(_ id: JobID) async throws -> [UInt8] {
    var bytes: [UInt8] = []
    for try await chunk in try output(id) { bytes += chunk }
    return bytes
  }
}

/// Descriptors of this process that point at `path` (a leak check for one job's log file).
func openDescriptors(to path: String) -> Int {
  FileSystem.entries("/proc/self/fd").filter { fd in
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
    return n > 0
      && String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) == path
  }.count
}

/// Keeps every message logged through `logger`, with the name of the thread that logged it.
final class LogRecorder: Sendable {
  struct Record: Sendable {
    var message: String
    var thread: String
    var level: Logger.Level = .info
    /// The logger's metadata and the call's, merged.
    var metadata: Logger.Metadata = [:]
  }

  private let records = Mutex<[Record]>([])

  var logged: [Record] { records.withLock { $0 } }

  var logger: Logger {
    Logger(label: "test") { _ in Handler(recorder: self) }
  }

  private struct Handler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
      get { metadata[key] }
      set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
      let record = Record(
        message: "\(event.message)", thread: currentThreadName(), level: event.level,
        metadata: metadata.merging(event.metadata ?? [:]) { $1 })
      recorder.records.withLock { $0.append(record) }
    }
  }
}

/// The calling thread's name as the kernel knows it.
func currentThreadName() -> String {
  (FileSystem.read("/proc/thread-self/comm") ?? "").trimmingCharacters(in: .newlines)
}

/// A fresh directory on the host's disk with `mode`, owned by root, that jobs can see: under
/// /var/tmp, because every job has a private /tmp. Removed with its content afterwards.
func withHostDirectory<T>(
  mode: mode_t = 0o755, _ body: (String) async throws -> T
) async throws -> T {
  let directory = "/var/tmp/jobworker-test-\(UUID().uuidString.prefix(8).lowercased())"
  try #require(mkdir(directory, mode) == 0, "mkdir \(directory): \(errnoText())")
  // mkdir applies the umask.
  chmod(directory, mode)
  defer { try? FileManager.default.removeItem(atPath: directory) }
  return try await body(directory)
}
