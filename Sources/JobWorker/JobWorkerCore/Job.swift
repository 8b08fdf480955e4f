import CJobInit
import Foundation
import Glibc
import Logging
import Synchronization

/// One job after its init was cloned: its descriptors, its state machine, and the handlers the
/// reactor runs when its output pipe, status pipe or pidfd becomes readable.
///
/// Threads: the handlers run on the reactor thread only; every other method may run anywhere.
/// All mutable state is the `JobStateMachine` in `state`: every change is one of its
/// transitions, taken under the lock, and the action it returns is applied by `apply(_:)` after
/// the lock is released, so the lock is never held across IO or a continuation resume.
/// Signals to the init are sent from the reactor thread too (`Reactor.execute`): there they
/// cannot fall between `reap` closing the pidfd and recording the end, so they never reach a
/// closed or reused descriptor.
final class Job: Sendable {
  let id: JobID
  let owner: String
  /// Where the init looks for the program; it reports which candidate runs.
  let program: ProgramSearch
  let arguments: [String]
  let limits: ResourceLimits
  let startedAt: Date
  let logPath: String

  /// The init's PID on the host.
  let pid: pid_t
  private let pidfd: Int32
  private let outputFD: Int32
  private let statusFD: Int32
  private let logFD: Int32
  private let maxOutputBytes: UInt64
  private let cgroup: any CgroupDriver
  private let reactor: Reactor
  private let logger: Logger
  private let state = Mutex(JobStateMachine())
  /// The reactor registrations of the three descriptors.
  private let tokens = Mutex<[UInt64]>([])
  /// Called once on the reactor thread when the job has ended, before its waiters resume.
  private let onEnd: @Sendable () -> Void

  struct Descriptors {
    var pid: pid_t
    var pidfd: Int32
    var output: Int32
    var status: Int32
    var log: Int32
  }

  init(
    id: JobID, spec: JobSpec, program: ProgramSearch, limits: ResourceLimits, logPath: String,
    descriptors: Descriptors, maxOutputBytes: UInt64, cgroup: any CgroupDriver, reactor: Reactor,
    logger: Logger, onEnd: @escaping @Sendable () -> Void = {}
  ) {
    self.onEnd = onEnd
    self.id = id
    self.owner = spec.owner
    self.program = program
    self.arguments = spec.arguments
    self.limits = limits
    self.startedAt = Date()
    self.logPath = logPath
    self.pid = descriptors.pid
    self.pidfd = descriptors.pidfd
    self.outputFD = descriptors.output
    self.statusFD = descriptors.status
    self.logFD = descriptors.log
    self.maxOutputBytes = maxOutputBytes
    self.cgroup = cgroup
    self.reactor = reactor
    var logger = logger
    logger[metadataKey: "jobworker.job_id"] = "\(id)"
    self.logger = logger
  }

  /// Registers the three descriptors with the reactor. On failure the caller kills the init.
  func watch() throws(JobError) {
    for (fd, handler) in [
      (outputFD, { @Sendable [self] scratch in self.pumpOutput(scratch) }),
      (statusFD, { @Sendable [self] _ in self.readReports() }),
      (pidfd, { @Sendable [self] scratch in self.reap(scratch) }),
    ] as [(Int32, Reactor.Handler)] {
      let token = try reactor.add(fd: fd, handler: handler)
      tokens.withLock { $0.append(token) }
    }
  }

  /// Undoes `watch()` for a launch that is abandoned before the init was released.
  func stopWatching() {
    let tokens = tokens.withLock { tokens in
      defer { tokens = [] }
      return tokens
    }
    for token in tokens { reactor.remove(token: token) }
  }

  /// Performs what a transition asked for. Never called with the lock held.
  private func apply(_ action: JobStateMachine.Action) {
    switch action {
    case .none:
      break
    case .resumeStart(let waiters, let result):
      for waiter in waiters { waiter.resume(returning: result) }
    case .resume(let waiters):
      for waiter in waiters { waiter.resume() }
    case .signalInit(let signal):
      // On the reactor thread, where `reap` closes the pidfd: checked there, the descriptor
      // is still ours.
      reactor.execute { [self] in
        if state.withLock({ $0.initIsAlive }) { _ = cjobinit_pidfd_signal(pidfd, signal) }
      }
    case .killAll:
      // Called on the reactor thread (see `killAll()`), before `reap` can close the pidfd.
      // The init first: its death kills every process of the job's PID namespace, race-free
      // however fast they fork; then whatever else is in the cgroup.
      logger.info("killing every process of the job")
      _ = cjobinit_pidfd_signal(pidfd, SIGKILL)
      cgroup.killAll(id.description)
    }
  }

  // MARK: Queries and control (any thread)

  /// The path of the program that runs (or ran); the command as requested until the init has
  /// reported which candidate it executed.
  var command: String {
    state.withLock { $0.runningCandidate }.map(program.candidate) ?? program.command
  }

  var status: JobStatus {
    let snapshot = state.withLock {
      (
        state: $0.jobState, endedAt: $0.endedAt, usage: $0.finalUsage, bytes: $0.outputBytes,
        loss: $0.outputLoss, candidate: $0.runningCandidate
      )
    }
    return JobStatus(
      id: id, owner: owner, command: snapshot.candidate.map(program.candidate) ?? program.command,
      arguments: arguments,
      state: snapshot.state, startedAt: startedAt, endedAt: snapshot.endedAt,
      usage: snapshot.usage ?? cgroup.usage(id.description), limits: limits,
      outputBytes: snapshot.bytes, outputLoss: snapshot.loss)
  }

  var hasEnded: Bool { state.withLock { $0.hasEnded } }

  /// Tasks waiting on this job (readers and stoppers), for leak checks in tests.
  var waiterCount: Int { state.withLock { $0.waiterCount } }

  /// Waits until the init reported that the program runs (or why it does not).
  func startResult() async -> Result<Void, JobError> {
    await withCheckedContinuation { continuation in
      apply(state.withLock { $0.waitForStart(continuation) })
    }
  }

  /// Asks the program to terminate (the init forwards SIGTERM). Returns false if it had ended.
  func requestStop() -> Bool {
    let (action, ended) = state.withLock { ($0.requestStop(), $0.hasEnded) }
    apply(action)
    return !ended
  }

  /// Kills the job's init (which takes every process of its PID namespace with it), then
  /// whatever else its cgroup lists; returns at once, `waitForEnd()` tells when it is done. Runs on the reactor thread, where the pidfd is known
  /// to be open (and where the cgroup's pseudo-files are read, not on the cooperative pool).
  func killAll() {
    reactor.execute { [self] in apply(state.withLock { $0.kill() }) }
  }

  /// Waits for the end of the job; throws CancellationError if the task is cancelled first.
  func waitForEnd() async throws {
    try await wait(.end)
  }

  /// Waits for the end of the job even if the calling task is cancelled: for cleanup that must
  /// finish (shutdown after a kill, whose end the kernel bounds).
  func waitForEndIgnoringCancellation() async {
    let id = state.withLock { $0.makeWaiterID() }
    try? await withCheckedThrowingContinuation { continuation in
      apply(state.withLock { $0.addWaiter(continuation, id: id, kind: .end) })
    }
  }

  /// Waits until more than `offset` bytes are stored or the job has ended.
  func waitForOutput(beyond offset: UInt64) async throws {
    try await wait(.output, beyond: offset)
  }

  /// Stored bytes and whether the job (and so the output) has ended.
  var outputProgress: (bytes: UInt64, ended: Bool) {
    state.withLock { ($0.outputBytes, $0.hasEnded) }
  }

  /// When the job ended (nil while it runs) and its stored bytes: what retention needs,
  /// without reading the cgroup as `status` does.
  var retentionProgress: (endedAt: Date?, bytes: UInt64) {
    state.withLock { ($0.endedAt, $0.outputBytes) }
  }

  private func wait(_ kind: JobStateMachine.WaiterKind, beyond offset: UInt64 = 0) async throws {
    let id = state.withLock { $0.makeWaiterID() }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        // Checked under the lock that `onCancel` takes, so a cancellation is never missed.
        let action = state.withLock { machine -> JobStateMachine.Action? in
          if Task.isCancelled { return nil }
          return machine.addWaiter(continuation, id: id, kind: kind, beyond: offset)
        }
        guard let action else { return continuation.resume(throwing: CancellationError()) }
        apply(action)
      }
    } onCancel: {
      state.withLock { $0.removeWaiter(id: id, kind: kind) }?.resume(
        throwing: CancellationError())
    }
  }

  // MARK: Reactor handlers (reactor thread only)

  /// Copies what the pipe holds into the log file, up to the cap; bytes past the cap, and all
  /// bytes after a failed write (a full disk), are read and dropped so that the job never
  /// blocks on a full pipe, and the job's status says why (`OutputLoss`).
  private func pumpOutput(_ buffer: UnsafeMutableRawBufferPointer) -> Reactor.Disposition {
    let n = read(outputFD, buffer.baseAddress, buffer.count)
    if n < 0 { return errno == EAGAIN || errno == EINTR ? .keep : .remove }
    if n == 0 { return .remove }
    let (stored, earlierLoss) = state.withLock { ($0.outputBytes, $0.outputLoss) }
    // After a failed write nothing more is stored: a later write that succeeds (the disk has
    // room again) would leave a hole in the middle of the log that no reader could see.
    let capacity = earlierLoss == nil ? maxOutputBytes - min(stored, maxOutputBytes) : 0
    let room = Int(min(UInt64(n), capacity))
    var written = 0
    var loss: OutputLoss? = nil
    while written < room {
      let w = write(logFD, buffer.baseAddress! + written, room - written)
      if w < 0 && errno == EINTR { continue }
      if w <= 0 {
        let code = w < 0 ? errno : EIO
        loss = .writeFailed(errno: code)
        logger.error(
          "cannot store the job's output; dropping the rest",
          metadata: ["error": "\(errnoText(code))", "jobworker.stored": "\(stored)"])
        break
      }
      written += w
    }
    if loss == nil && earlierLoss == nil && written < n {
      loss = .capReached(limit: maxOutputBytes)
    }
    apply(state.withLock { $0.outputStored(UInt64(written), loss: loss) })
    return .keep
  }

  private func readReports() -> Reactor.Disposition {
    while true {
      var report = cjobinit_report()
      let n = withUnsafeMutableBytes(of: &report) { read(statusFD, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      if n < 0 && errno == EAGAIN { return .keep }
      guard n == MemoryLayout<cjobinit_report>.size else { return .remove }
      switch report.kind {
      case Int32(CJOBINIT_REPORT_STARTED):
        apply(state.withLock { $0.started(candidate: report.candidate) })
      case Int32(CJOBINIT_REPORT_FAILED):
        let error =
          report.stage == Int32(CJOBINIT_STAGE_EXEC)
          ? program.execError(errno: report.value, candidate: report.candidate)
          : Self.startError(stage: report.stage, errno: report.value, program.command)
        apply(state.withLock { $0.failedToStart(error) })
      case Int32(CJOBINIT_REPORT_EXITED):
        apply(state.withLock { $0.programExited(status: report.value) })
      default:
        logger.error("unknown report from job init", metadata: ["jobworker.kind": "\(report.kind)"])
      }
    }
  }

  /// The init has exited: reap it, collect the last output and reports, read the final usage,
  /// remove the cgroup and wake everyone waiting. When the init (PID 1 of the job's namespace)
  /// exits, the kernel kills every other process of the namespace and only then lets the init
  /// be reaped, so at this point no process of the job is left to write.
  private func reap(_ scratch: UnsafeMutableRawBufferPointer) -> Reactor.Disposition {
    var initStatus: Int32 = 0
    let reaped = waitpid(pid, &initStatus, WNOHANG)
    if reaped == 0 || (reaped < 0 && errno == EINTR) { return .keep }
    if reaped < 0 {
      // ECHILD: something else in this process reaped our child (a waitpid(-1) elsewhere, or
      // SIGCHLD set to SIG_IGN), so its status is lost; the program's own status, reported
      // by the init, usually is not.
      logger.warning(
        "the job's init was reaped elsewhere", metadata: ["error": "\(errnoText())"])
    }

    while pumpOutput(scratch) == .keep, hasPendingInput(outputFD) {}
    _ = readReports()
    let name = id.description
    let leftovers = cgroup.processes(name)
    if !leftovers.isEmpty {
      // Cannot happen for processes of the namespace; a process that joined the cgroup
      // from outside would keep it alive, so kill it rather than leak the cgroup.
      logger.warning(
        "processes left in the job's cgroup", metadata: ["jobworker.pids": "\(leftovers)"])
      cgroup.killAll(name)
    }
    let usage = cgroup.usage(name)
    let oomKills = cgroup.oomKills(name)
    // From here the outcome is fixed and `status` reports this usage, not the cgroup's.
    apply(
      state.withLock { $0.reaped(initStatus: initStatus, usage: usage, oomKills: oomKills) })
    do {
      try cgroup.remove(name)
    } catch {
      logger.error("cannot remove the job's cgroup", metadata: ["error": "\(error)"])
    }
    stopWatching()
    close(outputFD)
    close(statusFD)
    close(logFD)
    close(pidfd)

    let (action, final) = state.withLock { ($0.cleanedUp(at: Date()), $0.jobState) }
    logger.info(
      "job ended",
      metadata: [
        "jobworker.state": "\(final)", "jobworker.cpu_us": "\(usage.cpuMicros)",
        "jobworker.memory_peak": "\(usage.memoryPeakBytes)",
      ])
    // After the transition (`hasEnded` holds) and before the waiters resume, so that a
    // caller whose `stop` returned sees the job counted as ended everywhere.
    onEnd()
    apply(action)
    return .remove
  }

  private func hasPendingInput(_ fd: Int32) -> Bool {
    var available: Int32 = 0
    return ioctl(fd, UInt(FIONREAD), &available) == 0 && available > 0
  }

  // MARK: Pure helpers

  static func startError(stage: Int32, errno code: Int32, _ command: String) -> JobError {
    let step: String
    switch stage {
    case Int32(CJOBINIT_STAGE_EXEC): step = "execve \(command)"
    case Int32(CJOBINIT_STAGE_CHDIR): step = "chdir to the working directory"
    case Int32(CJOBINIT_STAGE_CREDENTIALS): step = "switching to the job's user"
    case Int32(CJOBINIT_STAGE_NO_NEW_PRIVS): step = "setting no_new_privs"
    case Int32(CJOBINIT_STAGE_MOUNT_PRIVATE): step = "making mounts private"
    case Int32(CJOBINIT_STAGE_MOUNT_PROC): step = "mounting /proc"
    case Int32(CJOBINIT_STAGE_MOUNT_SYS): step = "mounting /sys"
    case Int32(CJOBINIT_STAGE_MOUNT_TMP): step = "mounting the job's private /tmp"
    case Int32(CJOBINIT_STAGE_MOUNT_SHM): step = "mounting the job's private /dev/shm"
    case Int32(CJOBINIT_STAGE_LOOPBACK): step = "bringing up lo"
    case Int32(CJOBINIT_STAGE_HOSTNAME): step = "setting the host name"
    case Int32(CJOBINIT_STAGE_FORK): step = "forking the program"
    case Int32(CJOBINIT_STAGE_STDIO): step = "setting up the job's standard descriptors"
    case Int32(CJOBINIT_STAGE_RELEASE): step = "waiting for the worker to release the job's init"
    case Int32(CJOBINIT_STAGE_EXEC_INIT): step = "executing the job's init (jobinit)"
    case Int32(CJOBINIT_STAGE_SPEC): step = "reading the job in its init (jobinit)"
    case Int32(CJOBINIT_STAGE_CGROUP): step = "joining the job's cgroup"
    default: step = "job setup step \(stage)"
    }
    let kind: JobError.Code = code == EAGAIN || code == ENOMEM ? .resourceExhausted : .failedToStart
    return JobError(kind, "\(step): \(errnoText(code))")
  }
}
