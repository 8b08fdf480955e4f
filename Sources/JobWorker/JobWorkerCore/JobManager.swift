import Foundation
import Glibc
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
  let cgroup: any CgroupDriver
  private let reactor: Reactor
  private let jobsDirectory: String
  private let state = Mutex(State())

  private struct State {
    var jobs: [JobID: Job] = [:]
    /// Insertion order, for `list()`.
    var order: [JobID] = []
    /// Jobs whose init runs but whose `start` has not returned yet: not visible to callers,
    /// but `shutdown` must stop them too.
    var launching: [JobID: Job] = [:]
    var shuttingDown = false
  }

  /// Detects cgroup v1 or v2, prepares the parent cgroup, removes stale job cgroups of a
  /// crashed previous run and starts the reactor thread. Killing and removing stale cgroups
  /// waits on the kernel (a moment per cgroup) on the calling thread.
  /// - Throws: `JobError.unavailable` without root or usable cgroups.
  public init(configuration: Configuration, logger: Logger) throws {
    guard geteuid() == 0 else {
      throw JobError(.unavailable, "the job worker needs root (namespaces and cgroups)")
    }
    self.configuration = configuration
    self.logger = logger
    self.jobsDirectory = configuration.dataDirectory + "/jobs"
    do {
      try FileSystem.makeDirectories(jobsDirectory, mode: 0o700)
    } catch {
      throw JobError(.unavailable, "cannot create the data directory: \(error)")
    }
    let cgroup = try Cgroups.detect(
      root: configuration.cgroupRoot, parent: configuration.cgroupName)
    do {
      let stale = try cgroup.prepare()
      if !stale.isEmpty {
        logger.info("removed stale job cgroups", metadata: ["jobworker.cgroups": "\(stale)"])
      }
    } catch {
      throw JobError(.unavailable, "cannot prepare cgroups: \(error)")
    }
    self.cgroup = cgroup
    self.reactor = try Reactor()
    logger.debug("job manager ready", metadata: ["jobworker.cgroup_version": "\(cgroup.version)"])
  }

  /// Starts a job. Everything that can fail before the program runs (bad limits, no such
  /// executable, permission denied at `execve`) throws here; a returned job is running (or
  /// has already ended, if it was that quick).
  public func start(_ spec: JobSpec) async throws -> JobStatus {
    try Validation.strings(spec)
    let (limits, cgroupLimits) = try Validation.limits(
      spec.limits, defaults: configuration.defaultLimits, maximum: configuration.maxLimits)
    let path = try Validation.executable(spec.command, environment: spec.environment)
    guard !state.withLock({ $0.shuttingDown }) else {
      throw JobError(.unavailable, "the job manager is shutting down")
    }

    let id = JobID()
    let name = id.description
    let directory = "\(jobsDirectory)/\(name)"
    let logPath = directory + "/output"
    var logger = logger
    logger[metadataKey: "jobworker.job_id"] = "\(id)"

    // Every step registers its undo; the undo list runs if a later step fails.
    var undo: [() -> Void] = []
    defer { for step in undo.reversed() { step() } }

    try Self.system(.internalError) { () throws(FileSystem.SystemError) in
      try FileSystem.makeDirectory(directory, mode: 0o700)
    }
    undo.append { rmdir(directory) }
    let logFD = open(logPath, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o600)
    guard logFD >= 0 else {
      throw JobError(.internalError, "cannot create \(logPath): \(errnoText())")
    }
    undo.append {
      close(logFD)
      unlink(logPath)
    }
    // Registered first, so that it also undoes a partial `create`. On the reactor thread:
    // after an abandoned launch, rmdir waits for the kernel to release the init's task.
    undo.append { [cgroup, reactor] in reactor.execute { try? cgroup.remove(name) } }
    do {
      try cgroup.create(name, limits: cgroupLimits)
    } catch {
      // The kernel rejects limits it cannot apply with EINVAL (e.g. an IO limit on a device
      // that is not throttleable).
      throw JobError(error.errno == EINVAL ? .invalidArgument : .internalError, "\(error)")
    }

    var environment = spec.environment
    if !environment.contains(where: { $0.hasPrefix("PATH=") }) {
      environment.append("PATH=" + Validation.defaultPath)
    }
    let launched = try Launcher.spawn(
      Launcher.Request(
        path: path, arguments: spec.arguments, environment: environment,
        workingDirectory: spec.workingDirectory ?? "/", hostname: "job-" + name.prefix(8),
        uid: configuration.runAsUser, gid: configuration.runAsGroup))
    let job = Job(
      id: id, spec: spec, command: path, limits: limits, logPath: logPath,
      descriptors: .init(
        pid: launched.pid, pidfd: launched.pidfd, output: launched.output,
        status: launched.status, log: logFD),
      maxOutputBytes: configuration.maxOutputBytesPerJob, cgroup: cgroup, reactor: reactor,
      logger: logger)
    do {
      try Self.system(.internalError) { () throws(FileSystem.SystemError) in
        try cgroup.add(pid: launched.pid, to: name)
      }
      try job.watch()
      // Checked again under the lock that `shutdown` takes, so that no job escapes it.
      try state.withLock { state throws(JobError) in
        guard !state.shuttingDown else {
          throw JobError(.unavailable, "the job manager is shutting down")
        }
        state.launching[id] = job
      }
    } catch {
      job.stopWatching()
      // Reaping the init waits for it to die: on the reactor thread, before the cgroup undo.
      reactor.execute { Launcher.abandon(launched) }
      throw error
    }
    // From here the job owns the descriptors, and its reaper removes the cgroup.
    undo = [{ rmdir(directory) }]
    do {
      try Launcher.release(launched)
    } catch {
      // The init reads EOF instead of the release byte and exits; the reaper cleans up.
      try? await job.waitForEnd()
      state.withLock { $0.launching[id] = nil }
      throw error
    }

    let result = await job.startResult()
    state.withLock { state in
      state.launching[id] = nil
      if case .success = result {
        state.jobs[id] = job
        state.order.append(id)
      }
    }
    if case .failure(let error) = result {
      // The init exits right after reporting; wait until the reaper has cleaned up.
      try? await job.waitForEnd()
      unlink(logPath)
      throw error
    }
    undo = []
    logger.info(
      "job started",
      metadata: ["jobworker.owner": "\(spec.owner)", "jobworker.command": "\(path)"])
    return job.status
  }

  /// Stops a job: SIGTERM to the program (through its init), then after the grace period
  /// SIGKILL to every process of the job. Idempotent; returns the final status once the job
  /// has ended. If the calling task is cancelled, the job is killed without waiting.
  public func stop(_ id: JobID) async throws -> JobStatus {
    await stop(try lookup(id))
  }

  private func stop(_ job: Job) async -> JobStatus {
    guard job.requestStop() else { return job.status }
    let grace = configuration.stopGracePeriod
    let ended = await withTaskGroup(of: Bool.self) { group in
      group.addTask { (try? await job.waitForEnd()) != nil }
      group.addTask {
        try? await Task.sleep(for: grace)
        return false
      }
      let first = await group.next() ?? false
      group.cancelAll()
      return first
    }
    if !ended {
      job.killAll()
      try? await job.waitForEnd()
    }
    return job.status
  }

  /// The current status of a job; usage is read live from its cgroup while it runs.
  public func status(_ id: JobID) throws -> JobStatus {
    try lookup(id).status
  }

  /// All jobs this manager started, running and ended, oldest first.
  // TODO: Forget ended jobs (and delete their logs) after a retention period; today they
  // stay until the manager is dropped.
  public func list() -> [JobStatus] {
    let jobs = state.withLock { state in state.order.compactMap { state.jobs[$0] } }
    return jobs.map(\.status)
  }

  /// The job's output from its first byte, following it live until the job has ended.
  public func output(_ id: JobID) throws -> JobOutput {
    JobOutput(job: try lookup(id))
  }

  /// Stops every running job (SIGTERM, grace period, kill), removes their cgroups and ends
  /// the reactor thread. Later calls to `start` fail with `unavailable`.
  public func shutdown() async {
    let jobs = state.withLock { state in
      state.shuttingDown = true
      return Array(state.jobs.values) + Array(state.launching.values)
    }
    await withDiscardingTaskGroup { group in
      for job in jobs where !job.hasEnded {
        group.addTask { _ = await self.stop(job) }
      }
    }
    await reactor.stop()
    cgroup.removeParent()
  }

  /// The job object, for tests.
  func job(_ id: JobID) -> Job? { state.withLock { $0.jobs[id] } }

  private func lookup(_ id: JobID) throws(JobError) -> Job {
    guard let job = state.withLock({ $0.jobs[id] }) else {
      throw JobError(.notFound, "no job \(id)")
    }
    return job
  }

  private static func system(
    _ code: JobError.Code, _ body: () throws(FileSystem.SystemError) -> Void
  ) throws(JobError) {
    do {
      try body()
    } catch {
      throw JobError(
        error.errno == ENOSPC || error.errno == EMFILE ? .resourceExhausted : code,
        "\(error)")
    }
  }
}
