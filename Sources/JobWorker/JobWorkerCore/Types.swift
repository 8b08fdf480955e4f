public import Foundation

/// A job's identity: a random UUID, rendered as its lowercase string.
public struct JobID: Hashable, Sendable, CustomStringConvertible {
  /// The canonical lowercase UUID string.
  public let description: String

  /// Parses a UUID string; returns nil for anything else (so callers can answer
  /// `invalidArgument` or `notFound` without touching the file system with it).
  public init?(_ string: String) {
    guard let uuid = UUID(uuidString: string) else { return nil }
    self.description = uuid.uuidString.lowercased()
  }

  init() {
    self.description = UUID().uuidString.lowercased()
  }
}

/// Throttling of one block device. Unset fields are unlimited.
public struct IOLimit: Hashable, Sendable {
  /// Path of a block device node, e.g. `/dev/vda`.
  public var device: String
  public var readBytesPerSecond: UInt64?
  public var writeBytesPerSecond: UInt64?
  public var readIOPS: UInt64?
  public var writeIOPS: UInt64?

  public init(
    device: String, readBytesPerSecond: UInt64? = nil, writeBytesPerSecond: UInt64? = nil,
    readIOPS: UInt64? = nil, writeIOPS: UInt64? = nil
  ) {
    self.device = device
    self.readBytesPerSecond = readBytesPerSecond
    self.writeBytesPerSecond = writeBytesPerSecond
    self.readIOPS = readIOPS
    self.writeIOPS = writeIOPS
  }
}

/// Resource limits of one job, enforced by its cgroup. A nil field takes the manager's default.
public struct ResourceLimits: Hashable, Sendable {
  /// CPU quota in thousandths of a core (1000 = one full core).
  public var cpuMillicores: UInt32?
  /// Hard memory limit in bytes; swap is always disabled for jobs.
  public var memoryBytes: UInt64?
  /// Maximum number of processes and threads (fork-bomb protection).
  public var maxPids: UInt32?
  /// Per-device IO throttles.
  public var io: [IOLimit]

  public init(
    cpuMillicores: UInt32? = nil, memoryBytes: UInt64? = nil, maxPids: UInt32? = nil,
    io: [IOLimit] = []
  ) {
    self.cpuMillicores = cpuMillicores
    self.memoryBytes = memoryBytes
    self.maxPids = maxPids
    self.io = io
  }
}

/// What to run. The command runs directly (no shell): an absolute path, or a bare name
/// looked up in the `PATH` of `environment` (or a default `PATH`).
public struct JobSpec: Sendable {
  public var command: String
  public var arguments: [String]
  /// `NAME=value` entries; the job gets exactly these (plus a default `PATH` if none is set).
  public var environment: [String]
  /// Absolute directory to start in; `/` when nil.
  public var workingDirectory: String?
  public var limits: ResourceLimits
  /// Recorded only; authorization is the caller's job.
  public var owner: String

  public init(
    command: String, arguments: [String] = [], environment: [String] = [],
    workingDirectory: String? = nil, limits: ResourceLimits = ResourceLimits(), owner: String = ""
  ) {
    self.command = command
    self.arguments = arguments
    self.environment = environment
    self.workingDirectory = workingDirectory
    self.limits = limits
    self.owner = owner
  }
}

/// Where a job is in its life.
public enum JobState: Hashable, Sendable {
  case running
  /// The program exited by itself with this code.
  case exited(code: Int32)
  /// The program was killed by a signal that did not come from `stop`.
  case signaled(signal: Int32)
  /// `stop` ended the job; `signal` is SIGTERM if it obeyed, SIGKILL if it had to be killed.
  case stopped(signal: Int32)
  /// The kernel's OOM killer killed a process of the job (its memory limit was hit).
  case oomKilled

  /// Whether the job has ended.
  public var isFinal: Bool { self != .running }
}

/// Resource usage read from the job's cgroup (live while running, frozen at the end).
public struct ResourceUsage: Hashable, Sendable {
  public var cpuMicros: UInt64
  public var memoryPeakBytes: UInt64
  public var ioReadBytes: UInt64
  public var ioWriteBytes: UInt64

  public init(
    cpuMicros: UInt64 = 0, memoryPeakBytes: UInt64 = 0, ioReadBytes: UInt64 = 0,
    ioWriteBytes: UInt64 = 0
  ) {
    self.cpuMicros = cpuMicros
    self.memoryPeakBytes = memoryPeakBytes
    self.ioReadBytes = ioReadBytes
    self.ioWriteBytes = ioWriteBytes
  }
}

/// A snapshot of a job.
public struct JobStatus: Sendable {
  public var id: JobID
  public var owner: String
  /// The resolved executable path that was run.
  public var command: String
  public var arguments: [String]
  public var state: JobState
  public var startedAt: Date
  public var endedAt: Date?
  public var usage: ResourceUsage
  /// The limits in force, with the manager's defaults filled in.
  public var limits: ResourceLimits
  /// Bytes of output stored so far.
  public var outputBytes: UInt64
  /// Why output was dropped, if any was: everything after the first `outputBytes` bytes.
  public var outputLoss: OutputLoss?
  /// True when output was dropped (see `outputLoss`).
  public var outputTruncated: Bool { outputLoss != nil }
}

/// Why a job's output was not stored in full. The stored bytes are always an exact prefix of
/// what the job wrote: once a byte is dropped, every later byte is dropped too.
public enum OutputLoss: Hashable, Sendable, CustomStringConvertible {
  /// The output reached the manager's cap (`maxOutputBytesPerJob`, in bytes).
  case capReached(limit: UInt64)
  /// Writing the log file failed with this errno (e.g. ENOSPC: the data directory's disk is
  /// full). Later output is dropped even if the disk recovers, so the log has no holes.
  case writeFailed(errno: Int32)

  public var description: String {
    switch self {
    case .capReached(let limit):
      "the output reached the job worker's cap of \(Self.bytes(limit)); the rest was dropped"
    case .writeFailed(let code):
      "the job worker could not store the output (\(errnoText(code))); the rest was dropped"
    }
  }

  private static func bytes(_ count: UInt64) -> String {
    for (unit, size) in [("GiB", UInt64(1) << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
    where count >= size && count % size == 0 {
      return "\(count / size) \(unit)"
    }
    return count == 1 ? "1 byte" : "\(count) bytes"
  }
}

/// Errors of the job worker library.
public struct JobError: Error, CustomStringConvertible {
  /// An extensible set of error codes (a struct, so that new codes do not break callers).
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Base: String, Hashable, Sendable {
      case notFound, invalidArgument, failedToStart, resourceExhausted, unavailable, internalError
      case inUse
    }
    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// No job with that ID.
    public static let notFound = Code(.notFound)
    /// The request is malformed (bad limits, bad environment entry, relative path...).
    public static let invalidArgument = Code(.invalidArgument)
    /// The program could not be started (no such file, not executable, setup failed).
    public static let failedToStart = Code(.failedToStart)
    /// A host resource ran out (file descriptors, processes, disk).
    public static let resourceExhausted = Code(.resourceExhausted)
    /// The manager cannot work here (no cgroups, not root) or is shutting down.
    public static let unavailable = Code(.unavailable)
    /// Another live job worker holds the data directory or the cgroup name (see
    /// `JobManager.init`): one of them must move to another directory or name.
    public static let inUse = Code(.inUse)
    /// A bug or an unexpected kernel answer.
    public static let internalError = Code(.internalError)

    public var description: String { base.rawValue }
  }

  public var code: Code
  public var message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code): \(message)" }
}
