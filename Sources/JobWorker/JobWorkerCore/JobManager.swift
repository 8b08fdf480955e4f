public import Foundation
import Glibc
public import Logging
import Metrics
import Synchronization

/// Runs jobs: isolated, resource-limited Linux processes whose output is kept in a file and
/// can be streamed by any number of readers.
///
/// The manager owns one background OS thread (the reactor) that pumps every job's output into
/// its log file and reaps exited jobs; it starts in `init` and ends in `shutdown()`, which must
/// be called before the manager is dropped. No Swift task is left running between calls.
///
/// Ended jobs are kept for `Configuration.retention` and within
/// `Configuration.maxStoredOutputBytes`; `sweep(now:)` forgets the rest and deletes their
/// output. The manager sweeps once when it starts (output files left by earlier runs); the
/// embedding program calls `sweep()` periodically (the job worker server does, every minute).
public final class JobManager: Sendable {
  /// Manager settings. Defaults suit a production host; tests override paths and names.
  public struct Configuration: Sendable {
    /// Where job logs live: `<dataDirectory>/jobs/<id>/output`.
    public var dataDirectory: String
    /// Limits for fields a `JobSpec` leaves nil.
    public var defaultLimits: ResourceLimits
    /// The largest limits a job may ask for (nil: the host's size).
    public var maxLimits: ResourceLimits
    /// Output past this many bytes is dropped and the job's `outputLoss` says so.
    public var maxOutputBytesPerJob: UInt64
    /// How long an ended job is kept: its record (`status`, `list`, `output`) and its output
    /// file. `sweep(now:)` forgets jobs that ended longer ago and deletes their output, and at
    /// start-up so do output files of earlier runs last written longer ago. More than zero.
    public var retention: Duration
    /// The most output bytes kept in the data directory, running jobs included. Over it,
    /// `sweep(now:)` forgets the ended jobs (and earlier runs' files) that ended first until the
    /// total fits; running jobs are never touched. At least `maxOutputBytesPerJob`.
    public var maxStoredOutputBytes: UInt64
    /// Size of each job's private `/tmp` and of its private `/dev/shm` (two tmpfs mounts in the
    /// job's mount namespace, gone with the job), at most the job's memory limit. Their pages
    /// are charged to the job's memory cgroup, so the memory limit bounds both together.
    public var scratchBytesPerJob: UInt64
    /// How long `stop` waits after SIGTERM before it kills every process of the job.
    public var stopGracePeriod: Duration
    /// The unprivileged user and group that jobs run as.
    public var runAsUser: uid_t
    public var runAsGroup: gid_t
    /// The cgroup file system root; nil detects `/sys/fs/cgroup` (v2 or v1).
    public var cgroupRoot: String?
    /// Name of the cgroup under which every job's cgroup is created (one path component).
    /// A manager locks it for its whole life: a second live manager with the same name is
    /// refused (`inUse`), and job cgroups left there by a crashed run are killed and removed
    /// at start-up. Two workers on one host need two names.
    public var cgroupName: String
    /// The `jobinit` executable, PID 1 of every job; nil: `jobinit` in the directory of the
    /// running executable (`/proc/self/exe`), where `swift build` puts it. Opened once in
    /// `init`, which fails if it is missing or not executable.
    public var initExecutable: String?

    public init(
      dataDirectory: String,
      defaultLimits: ResourceLimits = ResourceLimits(
        cpuMillicores: 1000, memoryBytes: 512 << 20, maxPids: 256),
      maxLimits: ResourceLimits = ResourceLimits(),
      maxOutputBytesPerJob: UInt64 = 64 << 20,
      retention: Duration = .seconds(24 * 60 * 60),
      maxStoredOutputBytes: UInt64 = 1 << 30,
      scratchBytesPerJob: UInt64 = 64 << 20,
      stopGracePeriod: Duration = .seconds(5),
      runAsUser: uid_t = 65534, runAsGroup: gid_t = 65534,
      cgroupRoot: String? = nil, cgroupName: String = "jobworker", initExecutable: String? = nil
    ) {
      self.dataDirectory = dataDirectory
      self.defaultLimits = defaultLimits
      self.maxLimits = maxLimits
      self.maxOutputBytesPerJob = maxOutputBytesPerJob
      self.retention = retention
      self.maxStoredOutputBytes = maxStoredOutputBytes
      self.scratchBytesPerJob = scratchBytesPerJob
      self.stopGracePeriod = stopGracePeriod
      self.runAsUser = runAsUser
      self.runAsGroup = runAsGroup
      self.cgroupRoot = cgroupRoot
      self.cgroupName = cgroupName
      self.initExecutable = initExecutable
    }
  }

  let configuration: Configuration
  let logger: Logger
  let cgroup: any CgroupDriver
  let initExecutable: InitExecutable
  private let reactor: Reactor
  private let jobsDirectory: String
  private let directories: JobDirectories
  private let state: Mutex<State>
  private let jobsForgotten = Counter(label: "jobworker_jobs_forgotten_total")
  private let bytesRemoved = Counter(label: "jobworker_output_bytes_removed_total")

  private struct State {
    var jobs: [JobID: Job] = [:]
    /// Insertion order, for `list()`.
    var order: [JobID] = []
    /// Jobs whose init runs but whose `start` has not returned yet: not visible to callers,
    /// but `shutdown` must stop them too.
    var launching: [JobID: Job] = [:]
    /// The running jobs of each owner, for the per-user cap (`runningJobCount(owner:)`):
    /// added by `commit`, removed by the job's end (`jobEnded`).
    var running: [String: Set<JobID>] = [:]
    /// Output files of earlier runs, found at start-up: no record, so not visible to callers,
    /// but they count toward `maxStoredOutputBytes` and are removed once past the retention.
    var earlierOutputs: [JobID: JobDirectories.StoredOutput] = [:]
    var shuttingDown = false
    /// The next job's output directory and file, made ahead on the reactor thread (see
    /// `takeOutput`); nil while none is ready.
    var spareOutput: JobOutputFile?
    /// Held from `init` until `shutdown` has removed the parent cgroup; nil after.
    var locks: Locks?
  }

  /// The two instance locks: one data directory and one cgroup name per live manager.
  private struct Locks {
    var dataDirectory: InstanceLock
    var cgroup: InstanceLock

    func release() {
      cgroup.release()
      dataDirectory.release()
    }
  }

  /// Locks the data directory and the cgroup name, detects cgroup v1 or v2, prepares the
  /// parent cgroup, removes stale job cgroups of a crashed previous run, starts the reactor
  /// thread and sweeps the output files of earlier runs (see `sweep(now:)`). Killing and
  /// removing stale cgroups waits on the kernel (a moment per cgroup) on the calling thread.
  /// - Throws: `JobError.unavailable` without root or usable cgroups, or when the `jobinit`
  ///   executable is missing or not executable; `JobError.inUse` when
  ///   another live manager (in this process or another) holds the data directory or the
  ///   cgroup name; `JobError.invalidArgument` for a cgroup name that is not one path component,
  ///   a scratch space of 0 bytes, a retention of zero or less, or a storage cap below the
  ///   per-job output cap.
  public init(configuration: Configuration, logger: Logger) throws {
    guard geteuid() == 0 else {
      throw JobError(.unavailable, "the job worker needs root (namespaces and cgroups)")
    }
    try Validation.cgroupName(configuration.cgroupName)
    // tmpfs reads size=0 as "no limit".
    guard configuration.scratchBytesPerJob > 0 else {
      throw JobError(.invalidArgument, "the scratch space per job must be at least 1 byte")
    }
    guard configuration.retention > .zero else {
      throw JobError(.invalidArgument, "the retention period of ended jobs must be more than zero")
    }
    guard configuration.maxStoredOutputBytes >= configuration.maxOutputBytesPerJob else {
      throw JobError(
        .invalidArgument,
        "the cap on stored output (\(configuration.maxStoredOutputBytes) bytes) must be at least "
          + "the output cap per job (\(configuration.maxOutputBytesPerJob) bytes)")
    }
    self.initExecutable = try InitExecutable(path: configuration.initExecutable)
    // While the process still has few descriptors open, so that the numbers are low.
    Launcher.reserveSlots()
    self.configuration = configuration
    self.logger = logger
    self.jobsDirectory = configuration.dataDirectory + "/jobs"
    self.directories = JobDirectories(path: jobsDirectory)
    do {
      try FileSystem.makeDirectories(jobsDirectory, mode: 0o700)
    } catch {
      throw JobError(.unavailable, "cannot create the data directory: \(error)")
    }
    let dataLock = try Self.lockDataDirectory(configuration.dataDirectory)
    let cgroup: any CgroupDriver
    let cgroupLock: InstanceLock
    do {
      cgroup = try Cgroups.detect(root: configuration.cgroupRoot, parent: configuration.cgroupName)
      cgroupLock = try Self.lockParent(of: cgroup, name: configuration.cgroupName)
    } catch {
      dataLock.release()
      throw error
    }
    let locks = Locks(dataDirectory: dataLock, cgroup: cgroupLock)
    do {
      // Under the lock, so these are no other live manager's jobs.
      let stale = try cgroup.removeStale()
      if !stale.isEmpty {
        logger.info("removed stale job cgroups", metadata: ["jobworker.cgroups": "\(stale)"])
      }
      self.reactor = try Reactor()
    } catch {
      locks.release()
      throw error as? JobError ?? JobError(.unavailable, "cannot prepare cgroups: \(error)")
    }
    self.cgroup = cgroup
    // Under the data directory's lock, so every file found is an earlier run's.
    let (earlier, removedEmpty) = directories.scan()
    self.state = Mutex(
      State(
        earlierOutputs: Dictionary(uniqueKeysWithValues: earlier.map { ($0.id, $0) }),
        locks: locks))
    if !earlier.isEmpty || removedEmpty > 0 {
      logger.debug(
        "found output of earlier runs",
        metadata: [
          "jobworker.files": "\(earlier.count)",
          "jobworker.bytes": "\(earlier.reduce(0) { $0 + $1.bytes })",
          "jobworker.empty_directories_removed": "\(removedEmpty)",
        ])
    }
    sweep()
    reactor.execute { [weak self] in self?.makeSpareOutput() }
    logger.debug(
      "job manager ready",
      metadata: [
        "jobworker.cgroup_version": "\(cgroup.version)",
        "jobworker.init_executable": "\(initExecutable.path)",
      ])
  }

  /// Releases the instance locks of a manager dropped without `shutdown()` (its jobs, if any,
  /// are found and killed as stale by the next manager).
  deinit {
    state.withLock { $0.locks }?.release()
  }

  private static func lockDataDirectory(_ directory: String) throws(JobError) -> InstanceLock {
    let path = directory + "/jobworker.lock"
    do {
      return try InstanceLock.acquire(path: path, directory: false)
    } catch {
      switch error {
      case .held(let holder):
        throw JobError(
          .inUse,
          "another job worker\(holder.map { " (pid \($0))" } ?? "") is using the data "
            + "directory \(directory); stop it first, or give this one its own data directory")
      case .system(let error):
        throw JobError(.unavailable, "cannot lock the data directory: \(error)")
      }
    }
  }

  /// Creates the parent cgroup and locks it. A manager that is shutting down removes the
  /// parent while holding the lock, so after taking the lock the parent is created again:
  /// whatever that manager removed in between is restored under our lock.
  private static func lockParent(of cgroup: any CgroupDriver, name: String) throws(JobError)
    -> InstanceLock
  {
    var attempt = 0
    while true {
      attempt += 1
      do {
        try cgroup.createParent()
        let lock = try InstanceLock.acquire(path: cgroup.lockPath, directory: true)
        do {
          try cgroup.createParent()
        } catch {
          lock.release()
          throw error
        }
        return lock
      } catch let error as InstanceLock.Failure {
        switch error {
        case .held:
          throw JobError(
            .inUse,
            "another job worker on this host uses the cgroup name \"\(name)\" "
              + "(\(cgroup.lockPath) is locked); give each instance its own cgroup name")
        case .system(let error) where error.errno == ENOENT && attempt < 3:
          // Removed by a manager that was shutting down between our mkdir and our open.
          continue
        case .system(let error):
          throw JobError(.unavailable, "cannot lock the parent cgroup: \(error)")
        }
      } catch {
        throw JobError(.unavailable, "cannot prepare cgroups: \(error)")
      }
    }
  }

  // MARK: Starting a job: prepare, launch, commit

  /// What `prepare` made for a job before anything runs: its log directory and file and its
  /// cgroup with the limits applied. `start` owns them until `launch` hands the log descriptor
  /// and the cgroup to the job (its reaper closes and removes them); `discard` undoes them.
  struct PreparedJob: Sendable {
    let id: JobID
    let spec: JobSpec
    /// Where the init looks for the program.
    let program: ProgramSearch
    let limits: ResourceLimits
    let directory: String
    let logPath: String
    let logFD: Int32
    let logger: Logger
  }

  /// A job whose init was cloned into its cgroup and is watched by the reactor, but still
  /// waits for its release. The job owns every descriptor except the release pipe's.
  struct LaunchedJob: Sendable {
    let prepared: PreparedJob
    let job: Job
    let process: Launcher.Launched
  }

  /// Starts a job. Everything that can fail before the program runs (bad limits, no such
  /// executable, permission denied at `execve`) throws here; a returned job is running (or
  /// has already ended, if it was that quick).
  public func start(_ spec: JobSpec) async throws -> JobStatus {
    let prepared = try prepare(spec)
    let launched = try launch(prepared)
    return try await commit(launched)
  }

  /// Step 1: validates the spec and creates what the job needs before a process exists. On
  /// failure nothing is left.
  func prepare(_ spec: JobSpec) throws(JobError) -> PreparedJob {
    try Validation.strings(spec)
    let (limits, cgroupLimits) = try Validation.limits(
      spec.limits, defaults: configuration.defaultLimits, maximum: configuration.maxLimits)
    let program = try ProgramSearch(command: spec.command, environment: spec.environment)
    let output = try takeOutput()
    let id = output.id
    var logger = logger
    logger[metadataKey: "jobworker.job_id"] = "\(id)"
    let prepared = PreparedJob(
      id: id, spec: spec, program: program, limits: limits, directory: output.directory,
      logPath: output.logPath, logFD: output.logFD, logger: logger)
    do {
      if output.hasCgroup {
        try cgroup.applyLimits(id.description, cgroupLimits)
      } else {
        try cgroup.create(id.description, limits: cgroupLimits)
      }
    } catch {
      // Also undoes a partial `create`.
      discard(prepared)
      // The kernel rejects limits it cannot apply with EINVAL (e.g. an IO limit on a device
      // that is not throttleable).
      throw JobError(error.errno == EINVAL ? .invalidArgument : .internalError, "\(error)")
    }
    return prepared
  }

  /// What a new job gets before anything else: its id, its output directory and its empty
  /// output file (open for appending) and, when made ahead, its cgroup without limits.
  struct JobOutputFile: Sendable {
    let id: JobID
    let directory: String
    let logPath: String
    let logFD: Int32
    /// Whether the job's cgroup exists already (made ahead, still without limits).
    var hasCgroup = false
  }

  /// The output file (and cgroup) of a new job: the spare made ahead if there is one (and
  /// another is made on the reactor thread for the next start), else the file made here.
  /// Creating a directory and a file in it on ext4 took 1.0 ms of a 4.4 ms start (median,
  /// `docs/benchmarks.md`), as much as the whole clone: the inode allocator searches for a
  /// free inode, and a block group for the new directory; the six v1 cgroup directories
  /// another 0.3 ms. The id comes with the spare, so the job's id, directory, file and cgroup
  /// are what they would have been; only their creation moved earlier, and the cgroup's
  /// limits are still applied by `prepare`, before any process is in it.
  private func takeOutput() throws(JobError) -> JobOutputFile {
    let spare = try state.withLock { state throws(JobError) -> JobOutputFile? in
      guard !state.shuttingDown else {
        throw JobError(.unavailable, "the job manager is shutting down")
      }
      defer { state.spareOutput = nil }
      return state.spareOutput
    }
    reactor.execute { [weak self] in self?.makeSpareOutput() }
    if let spare { return spare }
    return try makeOutput()
  }

  private func makeOutput() throws(JobError) -> JobOutputFile {
    let id = JobID()
    let directory = "\(jobsDirectory)/\(id)"
    let logPath = directory + "/output"
    try Self.system(.internalError) { () throws(FileSystem.SystemError) in
      try FileSystem.makeDirectory(directory, mode: 0o700)
    }
    let logFD = open(logPath, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o600)
    guard logFD >= 0 else {
      let message = errnoText()
      rmdir(directory)
      throw JobError(.internalError, "cannot create \(logPath): \(message)")
    }
    return JobOutputFile(id: id, directory: directory, logPath: logPath, logFD: logFD)
  }

  /// On the reactor thread: makes the next job's output file and cgroup unless a spare is
  /// ready or the manager is shutting down (then what it made is removed again; `shutdown`
  /// removes a spare made before). A failure is left to the start that needs them, which then
  /// makes them itself and reports its own failure. A worker that crashes leaves at most this
  /// one empty cgroup, which the next manager removes as stale, and one empty file, which it
  /// finds as an earlier run's output and removes after the retention period.
  private func makeSpareOutput() {
    guard state.withLock({ !$0.shuttingDown && $0.spareOutput == nil }),
      var output = try? makeOutput()
    else { return }
    do {
      try cgroup.make(output.id.description)
      output.hasCgroup = true
    } catch {
      try? cgroup.remove(output.id.description)
    }
    let kept = state.withLock { state in
      guard !state.shuttingDown && state.spareOutput == nil else { return false }
      state.spareOutput = output
      return true
    }
    if !kept { remove(output) }
  }

  /// Removes an unused spare (it never held a process: its cgroup is empty).
  private func remove(_ output: JobOutputFile) {
    if output.hasCgroup { try? cgroup.remove(output.id.description) }
    close(output.logFD)
    unlink(output.logPath)
    rmdir(output.directory)
  }

  /// Step 2: clones the init (which waits for its release), puts it into the job's cgroup (on
  /// cgroup v1 the init joins it itself, see `CgroupDriver.joinFiles`), watches its
  /// descriptors and records it as launching, so that `shutdown` stops it too.
  /// On failure the init is killed and reaped and `prepare`'s work undone.
  func launch(_ prepared: PreparedJob) throws(JobError) -> LaunchedJob {
    var environment = prepared.spec.environment
    if !environment.contains(where: { $0.hasPrefix("PATH=") }) {
      environment.append("PATH=" + Validation.defaultPath)
    }
    let name = prepared.id.description
    let joinFiles = cgroup.joinFiles(name)
    let process: Launcher.Launched
    do {
      process = try Launcher.spawn(
        Launcher.Request(
          initExecutable: initExecutable, program: prepared.program,
          arguments: prepared.spec.arguments,
          environment: environment,
          workingDirectory: prepared.spec.workingDirectory ?? "/",
          hostname: "job-" + name.prefix(8),
          scratchBytes: min(
            configuration.scratchBytesPerJob,
            prepared.limits.memoryBytes ?? configuration.scratchBytesPerJob),
          uid: configuration.runAsUser, gid: configuration.runAsGroup,
          cgroupJoinFiles: joinFiles, cgroupDirectory: cgroup.cloneDirectory(name)))
    } catch {
      discard(prepared)
      throw error
    }
    let job = Job(
      id: prepared.id, spec: prepared.spec, program: prepared.program, limits: prepared.limits,
      logPath: prepared.logPath,
      descriptors: .init(
        pid: process.pid, pidfd: process.pidfd, output: process.output, status: process.status,
        log: prepared.logFD),
      maxOutputBytes: configuration.maxOutputBytesPerJob, cgroup: cgroup, reactor: reactor,
      logger: prepared.logger,
      onEnd: { [weak self, id = prepared.id, owner = prepared.spec.owner] in
        self?.jobEnded(id, owner: owner)
      })
    do {
      if joinFiles.isEmpty && !process.clonedIntoCgroup {
        try Self.system(.internalError) { () throws(FileSystem.SystemError) in
          try cgroup.add(pid: process.pid, to: name)
        }
      }
      try job.watch()
      // Checked again under the lock that `shutdown` takes, so that no job escapes it.
      try state.withLock { state throws(JobError) in
        guard !state.shuttingDown else {
          throw JobError(.unavailable, "the job manager is shutting down")
        }
        state.launching[prepared.id] = job
      }
    } catch {
      job.stopWatching()
      // Reaping the init waits for it to die: on the reactor thread, queued before the
      // cgroup removal that `discard` queues there.
      reactor.execute { Launcher.abandon(process) }
      discard(prepared)
      throw error
    }
    return LaunchedJob(prepared: prepared, job: job, process: process)
  }

  /// Step 3: releases the init and waits for its report. On success the job becomes visible
  /// (`status`, `list`, ...); on failure its files are removed once the reaper has cleaned
  /// up, and the init's report is thrown (`failedToStart: execve /x: Permission denied`).
  func commit(_ launched: LaunchedJob) async throws(JobError) -> JobStatus {
    let job = launched.job
    do {
      try Launcher.release(launched.process)
    } catch {
      // The init reads EOF instead of the release byte, reports it and exits.
      await finishFailedStart(launched)
      throw error
    }
    if case .failure(let error) = await job.startResult() {
      await finishFailedStart(launched)
      throw error
    }
    state.withLock { state in
      state.launching[job.id] = nil
      state.jobs[job.id] = job
      state.order.append(job.id)
      // `jobEnded` takes this lock after the job's end: a job that has ended by now is not
      // counted, and one that ends later is removed there.
      if !job.hasEnded { state.running[job.owner, default: []].insert(job.id) }
    }
    launched.prepared.logger.info(
      "job started",
      metadata: [
        "jobworker.owner": "\(job.owner)", "jobworker.command": "\(job.command)",
      ])
    return job.status
  }

  /// After a failed start: waits until the reaper has closed the job's descriptors and
  /// removed its cgroup, then removes the log and its directory. The init exits right after
  /// it reported the failure (or read EOF on the release pipe), so the wait is short, and it
  /// is not cut short by cancellation: nothing of a failed start may stay behind.
  func finishFailedStart(_ launched: LaunchedJob) async {
    await launched.job.waitForEndIgnoringCancellation()
    state.withLock { $0.launching[launched.job.id] = nil }
    unlink(launched.prepared.logPath)
    rmdir(launched.prepared.directory)
  }

  /// Undoes `prepare` before a job owns anything. The cgroup is removed on the reactor thread,
  /// after work queued there before (an abandoned init being reaped): rmdir waits for the
  /// kernel to release the init's task.
  private func discard(_ prepared: PreparedJob) {
    let name = prepared.id.description
    reactor.execute { [cgroup] in try? cgroup.remove(name) }
    close(prepared.logFD)
    unlink(prepared.logPath)
    rmdir(prepared.directory)
  }

  // MARK: Running jobs

  /// Stops a job: SIGTERM to the program (through its init), then after the grace period
  /// SIGKILL to every process of the job. Idempotent; returns the final status once the job
  /// has ended. If the calling task is cancelled, the job is killed without waiting.
  public func stop(_ id: JobID) async throws -> JobStatus {
    await stop(try lookup(id), finishing: false)
  }

  /// With `finishing`, a cancelled task skips the rest of the grace period but still waits
  /// for the job's end after the kill: for `shutdown`, whose cleanup must complete.
  private func stop(_ job: Job, finishing: Bool) async -> JobStatus {
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
      if finishing {
        // Bounded by the kernel, not by the caller: every process of the cgroup and the init
        // got SIGKILL, so the init exits and the reaper removes the cgroup (bounded waits).
        await job.waitForEndIgnoringCancellation()
      } else {
        try? await job.waitForEnd()
      }
    }
    return job.status
  }

  /// The current status of a job; usage is read live from its cgroup while it runs.
  public func status(_ id: JobID) throws -> JobStatus {
    try lookup(id).status
  }

  /// All jobs this manager started and has not forgotten (see `sweep(now:)`), running and
  /// ended, oldest first.
  public func list() -> [JobStatus] {
    let jobs = state.withLock { state in state.order.compactMap { state.jobs[$0] } }
    return jobs.map(\.status)
  }

  /// How many of `owner`'s jobs are running. Unlike `list()`, which reads every running
  /// job's usage from its cgroup (three pseudo-files each), this is a table lookup: a check
  /// made on every start must not cost work per running job (scanning the table was still
  /// ~10 % of the worker's CPU time per start with 1,000 jobs running, `perf`).
  public func runningJobCount(owner: String) -> Int {
    state.withLock { $0.running[owner]?.count ?? 0 }
  }

  /// The job's end, from its reaper (reactor thread).
  private func jobEnded(_ id: JobID, owner: String) {
    state.withLock { state in
      state.running[owner]?.remove(id)
      if state.running[owner]?.isEmpty == true { state.running[owner] = nil }
    }
  }

  /// The job's output from its first byte, following it live until the job has ended.
  ///
  /// The log file is opened here, so a sequence returned before the job is forgotten still
  /// delivers every stored byte after its file was deleted (on Linux the data stays until the
  /// last descriptor is closed).
  ///
  /// - Parameter maxChunkBytes: The largest chunk the sequence yields (at least 1).
  public func output(
    _ id: JobID, maxChunkBytes: Int = JobOutput.defaultMaxChunkBytes
  ) throws -> JobOutput {
    precondition(maxChunkBytes > 0, "a chunk holds at least one byte")
    let job = try lookup(id)
    do {
      return JobOutput(job: job, file: try LogFile(path: job.logPath), maxChunkBytes: maxChunkBytes)
    } catch {
      // Forgotten between the lookup and the open: the same answer as a later lookup.
      _ = try lookup(id)
      throw error
    }
  }

  // MARK: Retention

  /// Forgets the ended jobs that ended before `now` minus `Configuration.retention`, then,
  /// while the output stored in the data directory is over `Configuration.maxStoredOutputBytes`,
  /// the ended jobs that ended first; output files of earlier runs (found at start-up) are
  /// treated as jobs that ended when the file was last written. A forgotten job disappears from
  /// `status`, `list` and `output` (`notFound`, see `unknownJobError(_:)`) and its output file
  /// and directory are deleted. Running jobs are never forgotten. Output sequences already
  /// open on a forgotten job still deliver every stored byte and end as usual.
  ///
  /// Synchronous and short: a few `unlink`s on the calling thread. Does nothing once
  /// `shutdown()` has begun. Logs at info what it removed, when it removed anything.
  @discardableResult
  public func sweep(now: Date = Date()) -> RetentionSweep {
    guard
      let (jobs, earlier) = state.withLock({ state in
        state.shuttingDown ? nil : (Array(state.jobs.values), Array(state.earlierOutputs.values))
      })
    else { return RetentionSweep() }
    let entries =
      jobs.map { job in
        let progress = job.retentionProgress
        return Retention.Entry(id: job.id, endedAt: progress.endedAt, bytes: progress.bytes)
      } + earlier.map { Retention.Entry(id: $0.id, endedAt: $0.modified, bytes: $0.bytes) }
    let plan = Retention.plan(
      entries, now: now, retention: configuration.retention,
      maxStoredBytes: configuration.maxStoredOutputBytes)
    guard !plan.isEmpty else { return RetentionSweep() }
    // Only what this call removed from the table: a concurrent sweep may have chosen the same.
    let removed = state.withLock { state in
      let removed = plan.filter { choice in
        let id = choice.entry.id
        return state.jobs.removeValue(forKey: id) != nil
          || state.earlierOutputs.removeValue(forKey: id) != nil
      }
      let ids = Set(removed.map(\.entry.id))
      state.order.removeAll { ids.contains($0) }
      return removed
    }
    var sweep = RetentionSweep()
    for (entry, reason) in removed {
      do {
        try directories.remove(entry.id)
      } catch {
        logger.warning(
          "cannot remove a forgotten job's output",
          metadata: ["jobworker.job_id": "\(entry.id)", "error": "\(error)"])
        continue
      }
      sweep.forgotten.append(entry.id)
      sweep.bytes += entry.bytes
      if reason == .expired { sweep.expired += 1 }
    }
    if !sweep.forgotten.isEmpty {
      jobsForgotten.increment(by: sweep.forgotten.count)
      bytesRemoved.increment(by: Int(clamping: sweep.bytes))
      logger.info(
        "forgot ended jobs and removed their output",
        metadata: [
          "jobworker.jobs": "\(sweep.forgotten.count)", "jobworker.bytes": "\(sweep.bytes)",
          "jobworker.expired": "\(sweep.expired)",
          "jobworker.over_cap": "\(sweep.forgotten.count - sweep.expired)",
        ])
    }
    return sweep
  }

  /// What `status`, `stop` and `output` throw for an id they do not know: one message for a
  /// job that never existed and one that was forgotten, so that callers who may not see a job
  /// (the server's other users) can get exactly this answer too.
  public func unknownJobError(_ id: JobID) -> JobError {
    JobError(
      .notFound,
      "job \(id) not found: no such job, or its record expired (ended jobs are kept for "
        + "\(configuration.retention.retentionText), less once their stored output exceeds the "
        + "job worker's cap)")
  }

  /// Stops every running job (SIGTERM, grace period, kill), removes their cgroups and the
  /// parent cgroup, ends the reactor thread and releases the instance locks. Later calls to
  /// `start` fail with `unavailable`; later calls to `shutdown` return at once.
  ///
  /// Cancelling the calling task (a server whose shutdown grace ran out) cuts the grace period
  /// short, not the cleanup: the jobs are killed at once and `shutdown` still waits until
  /// every job's cgroup is gone, which the kernel bounds (SIGKILL cannot be ignored).
  public func shutdown() async {
    let jobs = state.withLock { state in
      state.shuttingDown = true
      return Array(state.jobs.values) + Array(state.launching.values)
    }
    await withDiscardingTaskGroup { group in
      for job in jobs where !job.hasEnded {
        group.addTask { _ = await self.stop(job, finishing: true) }
      }
    }
    await reactor.stop()
    // Made by the last start's refill (the reactor has run all its work by now).
    if let spare = state.withLock({ state in
      defer { state.spareOutput = nil }
      return state.spareOutput
    }) {
      remove(spare)
    }
    // Only the holder of the lock removes the parent: another manager may use it otherwise.
    if let locks = state.withLock({ state in
      defer { state.locks = nil }
      return state.locks
    }) {
      cgroup.removeParent()
      locks.release()
    }
  }

  /// Drops the instance locks as the kernel does when the process dies, without stopping
  /// anything: how tests play a crashed worker.
  func releaseLocksAsIfCrashed() {
    state.withLock { state in
      defer { state.locks = nil }
      return state.locks
    }?.release()
  }

  /// The id of the output file made ahead for the next job, if one is ready, for tests.
  var spareOutputID: JobID? { state.withLock { $0.spareOutput?.id } }

  /// The job object, for tests.
  func job(_ id: JobID) -> Job? { state.withLock { $0.jobs[id] } }

  private func lookup(_ id: JobID) throws(JobError) -> Job {
    guard let job = state.withLock({ $0.jobs[id] }) else { throw unknownJobError(id) }
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
