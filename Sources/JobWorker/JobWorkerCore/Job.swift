import CJobInit
import Foundation
import Glibc
import Logging
import Synchronization

/// One job after its init was cloned: its descriptors, its state machine, and the handlers the
/// reactor runs when its output pipe, status pipe or pidfd becomes readable.
///
/// Threads: the handlers run on the reactor thread only; every other method may run anywhere.
/// All mutable state is in `state`; the lock is never held across IO or a continuation resume.
/// Signals to the init are sent from the reactor thread too (`Reactor.execute`): there they
/// cannot fall between `reap` closing the pidfd and recording the end, so they never reach a
/// closed or reused descriptor.
final class Job: Sendable {
  let id: JobID
  let owner: String
  let command: String
  let arguments: [String]
  let limits: ResourceLimits
  let startedAt: Date
  let logPath: String

  private let pid: pid_t
  private let pidfd: Int32
  private let outputFD: Int32
  private let statusFD: Int32
  private let logFD: Int32
  private let maxOutputBytes: UInt64
  private let cgroup: any CgroupDriver
  private let reactor: Reactor
  private let logger: Logger
  private let state = Mutex(State())

  private struct State {
    /// nil until the init reported STARTED or FAILED (or died first).
    var startResult: Result<Void, JobError>?
    var startWaiters: [CheckedContinuation<Result<Void, JobError>, Never>] = []
    /// The program's raw wait status, as reported by the init.
    var programStatus: Int32?
    var stopRequested = false
    var killed = false
    var outputBytes: UInt64 = 0
    var outputTruncated = false
    /// Set once the init was reaped, the output drained and the cgroup removed.
    var end: (state: JobState, at: Date, usage: ResourceUsage)?
    /// The final usage, read just before the cgroup is removed (so `status` never reads a
    /// removed cgroup as zeros).
    var finalUsage: ResourceUsage?
    var tokens: [UInt64] = []
    var nextWaiterID: UInt64 = 0
    /// Readers waiting for output beyond what they have read, and callers waiting for the end.
    var outputWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
    var endWaiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
  }

  struct Descriptors {
    var pid: pid_t
    var pidfd: Int32
    var output: Int32
    var status: Int32
    var log: Int32
  }

  init(
    id: JobID, spec: JobSpec, command: String, limits: ResourceLimits, logPath: String,
    descriptors: Descriptors, maxOutputBytes: UInt64, cgroup: any CgroupDriver, reactor: Reactor,
    logger: Logger
  ) {
    self.id = id
    self.owner = spec.owner
    self.command = command
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
      state.withLock { $0.tokens.append(token) }
    }
  }

  /// Undoes `watch()` for a launch that is abandoned before the init was released.
  func stopWatching() {
    let tokens = state.withLock { state in
      defer { state.tokens = [] }
      return state.tokens
    }
    for token in tokens { reactor.remove(token: token) }
  }

  // MARK: Queries and control (any thread)

  var status: JobStatus {
    let snapshot = state.withLock { ($0.end, $0.finalUsage, $0.outputBytes, $0.outputTruncated) }
    return JobStatus(
      id: id, owner: owner, command: command, arguments: arguments,
      state: snapshot.0?.state ?? .running, startedAt: startedAt, endedAt: snapshot.0?.at,
      usage: snapshot.1 ?? cgroup.usage(id.description), limits: limits,
      outputBytes: snapshot.2, outputTruncated: snapshot.3)
  }

  var hasEnded: Bool { state.withLock { $0.end != nil } }

  /// Tasks waiting on this job (readers and stoppers), for leak checks in tests.
  var waiterCount: Int { state.withLock { $0.outputWaiters.count + $0.endWaiters.count } }

  /// Waits until the init reported that the program runs (or why it does not).
  func startResult() async -> Result<Void, JobError> {
    await withCheckedContinuation { continuation in
      let result = state.withLock { state in
        if state.startResult == nil { state.startWaiters.append(continuation) }
        return state.startResult
      }
      if let result { continuation.resume(returning: result) }
    }
  }

  /// Asks the program to terminate (the init forwards SIGTERM). Returns false if it had ended.
  func requestStop() -> Bool {
    let send = state.withLock { state -> Bool in
      guard state.end == nil else { return false }
      state.stopRequested = true
      return true
    }
    if send {
      reactor.execute { [self] in
        if !hasEnded { _ = cjobinit_pidfd_signal(pidfd, SIGTERM) }
      }
    }
    return send
  }

  /// Kills every process of the job through its cgroup, then the init itself; returns at once,
  /// `waitForEnd()` tells when it is done. Runs on the reactor thread: freezing a v1 cgroup is
  /// a kernel wait that must not hold a cooperative-pool thread.
  func killAll() {
    reactor.execute { [self] in
      let kill = state.withLock { state -> Bool in
        guard state.end == nil else { return false }
        state.killed = true
        return true
      }
      guard kill else { return }
      logger.info("killing every process of the job")
      cgroup.killAll(id.description)
      _ = cjobinit_pidfd_signal(pidfd, SIGKILL)
    }
  }

  /// Waits for the end of the job; throws CancellationError if the task is cancelled first.
  func waitForEnd() async throws {
    try await wait(in: \.endWaiters) { $0.end != nil }
  }

  /// Waits until more than `offset` bytes are stored or the job has ended.
  func waitForOutput(beyond offset: UInt64) async throws {
    try await wait(in: \.outputWaiters) { $0.outputBytes > offset || $0.end != nil }
  }

  /// Stored bytes and whether the job (and so the output) has ended.
  var outputProgress: (bytes: UInt64, ended: Bool) {
    state.withLock { ($0.outputBytes, $0.end != nil) }
  }

  private func wait(
    in list: any WritableKeyPath<State, [UInt64: CheckedContinuation<Void, any Error>]> & Sendable,
    until ready: @escaping @Sendable (State) -> Bool
  ) async throws {
    let id = state.withLock { state in
      state.nextWaiterID += 1
      return state.nextWaiterID
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let immediate = state.withLock { state -> (any Error)?? in
          if Task.isCancelled { return .some(CancellationError()) }
          if ready(state) { return .some(nil) }
          state[keyPath: list][id] = continuation
          return .none
        }
        switch immediate {
        case .none: break
        case .some(nil): continuation.resume()
        case .some(let error?): continuation.resume(throwing: error)
        }
      }
    } onCancel: {
      state.withLock { $0[keyPath: list].removeValue(forKey: id) }?.resume(
        throwing: CancellationError())
    }
  }

  // MARK: Reactor handlers (reactor thread only)

  /// Copies what the pipe holds into the log file, up to the cap; bytes past the cap are read
  /// and dropped so that the job never blocks on a full pipe.
  private func pumpOutput(_ buffer: UnsafeMutableRawBufferPointer) -> Reactor.Disposition {
    let n = read(outputFD, buffer.baseAddress, buffer.count)
    if n < 0 { return errno == EAGAIN || errno == EINTR ? .keep : .remove }
    if n == 0 { return .remove }
    let stored = state.withLock { $0.outputBytes }
    let room = Int(min(UInt64(n), maxOutputBytes - min(stored, maxOutputBytes)))
    var written = 0
    while written < room {
      let w = write(logFD, buffer.baseAddress! + written, room - written)
      if w < 0 && errno == EINTR { continue }
      if w <= 0 {
        logger.error("cannot store output", metadata: ["jobworker.error": "\(errnoText())"])
        break
      }
      written += w
    }
    let waiters = state.withLock { state -> [UInt64: CheckedContinuation<Void, any Error>] in
      if written < n { state.outputTruncated = true }
      // Past the cap nothing is stored: waking the readers would only make them wait again.
      guard written > 0 else { return [:] }
      state.outputBytes += UInt64(written)
      defer { state.outputWaiters = [:] }
      return state.outputWaiters
    }
    for waiter in waiters.values { waiter.resume() }
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
        resolveStart(.success(()))
      case Int32(CJOBINIT_REPORT_FAILED):
        resolveStart(.failure(Self.startError(stage: report.stage, errno: report.value, command)))
      case Int32(CJOBINIT_REPORT_EXITED):
        state.withLock { $0.programStatus = report.value }
      default:
        logger.error("unknown report from job init", metadata: ["jobworker.kind": "\(report.kind)"])
      }
    }
  }

  private func resolveStart(_ result: Result<Void, JobError>) {
    let waiters = state.withLock { state -> [CheckedContinuation<Result<Void, JobError>, Never>] in
      guard state.startResult == nil else { return [] }
      state.startResult = result
      defer { state.startWaiters = [] }
      return state.startWaiters
    }
    for waiter in waiters { waiter.resume(returning: result) }
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
        "the job's init was reaped elsewhere", metadata: ["jobworker.error": "\(errnoText())"])
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
    state.withLock { $0.finalUsage = usage }
    do {
      try cgroup.remove(name)
    } catch {
      logger.error("cannot remove the job's cgroup", metadata: ["jobworker.error": "\(error)"])
    }
    let tokens = state.withLock { $0.tokens }
    for token in tokens { reactor.remove(token: token) }
    close(outputFD)
    close(statusFD)
    close(logFD)
    close(pidfd)

    resolveStart(
      .failure(
        JobError(
          .failedToStart,
          "the job's init exited during setup (\(Self.describe(waitStatus: initStatus)))")))
    let (final, waiters) = state.withLock { state in
      let final = Self.finalState(
        program: state.programStatus ?? initStatus, stopRequested: state.stopRequested,
        killed: state.killed, oomKills: oomKills)
      state.end = (final, Date(), usage)
      defer {
        state.outputWaiters = [:]
        state.endWaiters = [:]
      }
      return (final, Array(state.outputWaiters.values) + Array(state.endWaiters.values))
    }
    logger.info(
      "job ended",
      metadata: [
        "jobworker.state": "\(final)", "jobworker.cpu_us": "\(usage.cpuMicros)",
        "jobworker.memory_peak": "\(usage.memoryPeakBytes)",
      ])
    for waiter in waiters { waiter.resume() }
    return .remove
  }

  private func hasPendingInput(_ fd: Int32) -> Bool {
    var available: Int32 = 0
    return ioctl(fd, UInt(FIONREAD), &available) == 0 && available > 0
  }

  // MARK: Pure helpers

  static func finalState(program: Int32, stopRequested: Bool, killed: Bool, oomKills: UInt64)
    -> JobState
  {
    if stopRequested { return .stopped(signal: killed ? SIGKILL : SIGTERM) }
    if oomKills > 0 { return .oomKilled }
    let signal = program & 0x7f
    if signal == 0 { return .exited(code: (program >> 8) & 0xff) }
    return .signaled(signal: signal)
  }

  static func describe(waitStatus: Int32) -> String {
    let signal = waitStatus & 0x7f
    return signal == 0 ? "exit code \((waitStatus >> 8) & 0xff)" : "signal \(signal)"
  }

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
    case Int32(CJOBINIT_STAGE_LOOPBACK): step = "bringing up lo"
    case Int32(CJOBINIT_STAGE_HOSTNAME): step = "setting the host name"
    case Int32(CJOBINIT_STAGE_FORK): step = "forking the program"
    default: step = "job setup step \(stage)"
    }
    let kind: JobError.Code = code == EAGAIN || code == ENOMEM ? .resourceExhausted : .failedToStart
    return JobError(kind, "\(step): \(errnoText(code))")
  }
}
