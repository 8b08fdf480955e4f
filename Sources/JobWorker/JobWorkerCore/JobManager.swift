import Foundation
import Logging
import Synchronization

/// Runs jobs: isolated, resource-limited Linux processes whose output is kept in a file and
/// can be streamed by any number of readers.
///
/// The manager owns one background OS thread (the reactor) that pumps every job's output into
/// its log file and reaps exited jobs; it starts in `init` and ends in `shutdown()`, which must
/// be called before the manager is dropped. No Swift task is left running between calls.
public final class JobManager: Sendable {
  /// Manager settings. Defaults suit a production host; tests override paths and names.
  public struct Configuration: Sendable {
    /// Where job logs live: `<dataDirectory>/jobs/<id>/output`.
    public var dataDirectory: String
    /// Limits for fields a `JobSpec` leaves nil.
    public var defaultLimits: ResourceLimits
    /// The largest limits a job may ask for (nil: the host's size).
    public var maxLimits: ResourceLimits
    /// Output past this many bytes is dropped and the job is marked `outputTruncated`.
    public var maxOutputBytesPerJob: UInt64
    /// How long `stop` waits after SIGTERM before it kills every process of the job.
    public var stopGracePeriod: Duration
    /// The unprivileged user and group that jobs run as.
    public var runAsUser: uid_t
    public var runAsGroup: gid_t
    /// The cgroup file system root; nil detects `/sys/fs/cgroup` (v2 or v1).
    public var cgroupRoot: String?
    /// Name of the cgroup under which every job's cgroup is created. Job cgroups left there by
    /// a crashed run are killed and removed at start-up, so two managers must not share it.
    public var cgroupName: String

    public init(
      dataDirectory: String,
      defaultLimits: ResourceLimits = ResourceLimits(
        cpuMillicores: 1000, memoryBytes: 512 << 20, maxPids: 256),
      maxLimits: ResourceLimits = ResourceLimits(),
      maxOutputBytesPerJob: UInt64 = 64 << 20,
      stopGracePeriod: Duration = .seconds(5),
      runAsUser: uid_t = 65534, runAsGroup: gid_t = 65534,
      cgroupRoot: String? = nil, cgroupName: String = "jobworker"
    ) {
      self.dataDirectory = dataDirectory
      self.defaultLimits = defaultLimits
      self.maxLimits = maxLimits
      self.maxOutputBytesPerJob = maxOutputBytesPerJob
      self.stopGracePeriod = stopGracePeriod
      self.runAsUser = runAsUser
      self.runAsGroup = runAsGroup
      self.cgroupRoot = cgroupRoot
      self.cgroupName = cgroupName
    }
  }

  let configuration: Configuration
  let logger: Logger

  /// Detects cgroup v1 or v2, prepares the parent cgroup, removes stale job cgroups of a
  /// crashed previous run and starts the reactor thread.
  /// - Throws: `JobError.unavailable` without root or usable cgroups.
  public init(configuration: Configuration, logger: Logger) throws {
    self.configuration = configuration
    self.logger = logger
    throw JobError(.unavailable, "not implemented yet")
  }

  /// Starts a job. Everything that can fail before the program runs (bad limits, no such
  /// executable, permission denied at `execve`) throws here; a returned job is running.
  public func start(_ spec: JobSpec) async throws -> JobStatus {
    throw JobError(.unavailable, "not implemented yet")
  }

  /// Stops a job: SIGTERM to the program, then after the grace period SIGKILL to every
  /// process of the job. Idempotent; returns the final status once the job has ended.
  public func stop(_ id: JobID) async throws -> JobStatus {
    throw JobError(.notFound, "no job \(id)")
  }

  /// The current status of a job.
  public func status(_ id: JobID) throws -> JobStatus {
    throw JobError(.notFound, "no job \(id)")
  }

  /// All jobs this manager knows, running and ended, oldest first.
  public func list() -> [JobStatus] { [] }

  /// The job's output from its first byte, following it live until the job has ended.
  public func output(_ id: JobID) throws -> JobOutput {
    throw JobError(.notFound, "no job \(id)")
  }

  /// Stops every running job, removes their cgroups and ends the reactor thread.
  public func shutdown() async {}
}

/// A job's combined stdout and stderr as chunks of at most 32 KiB, starting at the first byte
/// and ending after the job has ended and every stored byte was delivered. Each iterator reads
/// the log file on its own, so slow readers never slow the job or each other. Iteration throws
/// `CancellationError` when its task is cancelled.
public struct JobOutput: AsyncSequence, Sendable {
  public typealias Element = [UInt8]

  public struct AsyncIterator: AsyncIteratorProtocol {
    public mutating func next() async throws -> [UInt8]? { nil }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}
