import Foundation
public import GRPCCore
public import JobWorkerCore
public import JobWorkerProtos
public import Logging
import Metrics
import Synchronization
public import TLSKit

/// The `jobworker.v1.JobWorker` gRPC service: authorization and request checks in front of a
/// `JobManager`.
///
/// Identity comes only from the verified client certificate of the connection (see
/// `PeerRegistry`); request metadata is never consulted. An `admin` acts on every job, a
/// `user` only on jobs it started, and someone else's job answers exactly like a missing one.
public final class JobWorkerAPI: Jobworker_V1_JobWorker.SimpleServiceProtocol, Sendable {
  /// Server-side caps, on top of the manager's own limit maxima and the transport's
  /// maximum request size.
  public struct Limits: Sendable {
    /// Running jobs one identity may have at once.
    public var maxRunningJobsPerUser: Int
    /// Arguments plus environment entries of one job.
    public var maxArgumentCount: Int
    /// Bytes of command, arguments, environment and working directory together.
    public var maxArgumentBytes: Int
    /// Largest output message; the proto promises bounded messages. A stream with a backlog
    /// (a finished job, a client that fell behind) gets full messages of this size, one that
    /// keeps up with a live job gets what was written since its last message. Clients must
    /// accept messages this large.
    ///
    /// 255 KiB: larger messages are faster (a 64 MiB `jobctl logs` in ~0.14 s against ~0.21 s
    /// with 32 KiB, the server's CPU per byte down by a third; docs/benchmarks.md). Just under
    /// a power of two: with its ~15 bytes of protobuf and gRPC framing a message of 256 KiB of
    /// output would take a 512 KiB buffer. What a stalled client holds grows with the message:
    /// gRPC's buffer of 10 messages plus its flow-control window; `jobctl` keeps its HTTP/2
    /// decoder's buffers small (`HTTP2FrameAligner`), so a blocked one holds ~9–10 MiB
    /// (`CLIHostileTests`, bound 16 MiB). On the server a stalled reader holds ~1.2 MiB.
    public var maxChunkBytes: Int

    public init(
      maxRunningJobsPerUser: Int = 10, maxArgumentCount: Int = 1024,
      maxArgumentBytes: Int = 32 * 1024, maxChunkBytes: Int = 255 * 1024
    ) {
      self.maxRunningJobsPerUser = maxRunningJobsPerUser
      self.maxArgumentCount = maxArgumentCount
      self.maxArgumentBytes = maxArgumentBytes
      self.maxChunkBytes = maxChunkBytes
    }
  }

  private let manager: JobManager
  private let peers: PeerRegistry
  private let limits: Limits
  private let logger: Logger
  /// Starts in flight per identity, so concurrent StartJob calls cannot overshoot the cap.
  private let pendingStarts = Mutex<[String: Int]>([:])
  private let openStreams = Mutex(0)
  private let jobsStarted = Counter(label: "jobworker_jobs_started_total")
  private let startsOverCap = Counter(label: "jobworker_starts_over_cap_total")
  private let callsRefused = Counter(label: "jobworker_calls_refused_total")

  public init(manager: JobManager, peers: PeerRegistry, limits: Limits = Limits(), logger: Logger) {
    self.manager = manager
    self.peers = peers
    self.limits = limits
    self.logger = logger
  }

  public func startJob(
    request: Jobworker_V1_StartJobRequest, context: ServerContext
  ) async throws -> Jobworker_V1_StartJobResponse {
    let caller = try authenticate(context)
    try validate(request)
    let pending = pendingStarts.withLock { pending in
      pending[caller.name, default: 0] += 1
      return pending[caller.name, default: 0]
    }
    defer {
      pendingStarts.withLock { pending in
        pending[caller.name, default: 1] -= 1
        if pending[caller.name] == 0 { pending[caller.name] = nil }
      }
    }
    // Counted after reserving: a concurrent start is either still pending (counted above) or
    // already visible as running here, so the count can only err on the safe side.
    // From memory: `list()` would read every running job's cgroup, on every start.
    let running = manager.runningJobCount(owner: caller.name)
    guard running + pending - 1 < limits.maxRunningJobsPerUser else {
      startsOverCap.increment()
      throw RPCError(
        code: .resourceExhausted,
        message: "\(caller.name) already has \(running) running jobs (limit "
          + "\(limits.maxRunningJobsPerUser)); stop one or wait for one to end")
    }
    let spec = JobSpec(
      command: request.command, arguments: request.args, environment: request.env,
      workingDirectory: request.workingDirectory.isEmpty ? nil : request.workingDirectory,
      limits: ResourceLimits(request.limits), owner: caller.name)
    let status = try await manager.start(spec)
    jobsStarted.increment()
    logger.info(
      "job started",
      metadata: [
        "jobworker.job_id": "\(status.id)", "jobworker.caller": "\(caller.name)",
        "jobworker.command": "\(status.command)",
      ])
    return .with { $0.job = Jobworker_V1_JobStatus(status) }
  }

  public func stopJob(
    request: Jobworker_V1_StopJobRequest, context: ServerContext
  ) async throws -> Jobworker_V1_StopJobResponse {
    let caller = try authenticate(context)
    let id = try visibleJob(request.jobID, to: caller).id
    let status = try await manager.stop(id)
    logger.info(
      "job stopped", metadata: ["jobworker.job_id": "\(id)", "jobworker.caller": "\(caller.name)"])
    return .with { $0.job = Jobworker_V1_JobStatus(status) }
  }

  public func getJobStatus(
    request: Jobworker_V1_GetJobStatusRequest, context: ServerContext
  ) async throws -> Jobworker_V1_GetJobStatusResponse {
    let caller = try authenticate(context)
    let status = try visibleJob(request.jobID, to: caller)
    return .with { $0.job = Jobworker_V1_JobStatus(status) }
  }

  public func listJobs(
    request: Jobworker_V1_ListJobsRequest, context: ServerContext
  ) async throws -> Jobworker_V1_ListJobsResponse {
    let caller = try authenticate(context)
    let jobs = manager.list().filter { caller.role == .admin || $0.owner == caller.name }
    return .with { $0.jobs = jobs.map(Jobworker_V1_JobStatus.init) }
  }

  /// Sends the stored output from the first byte, follows live output, then the final status.
  ///
  /// Each call reads the job's log file through its own iterator, so a slow client only
  /// slows itself (gRPC flow control suspends `response.write`), and a client that goes away
  /// cancels this task, which ends the iteration: nothing is left behind.
  public func streamOutput(
    request: Jobworker_V1_StreamOutputRequest,
    response: RPCWriter<Jobworker_V1_StreamOutputResponse>,
    context: ServerContext
  ) async throws {
    let caller = try authenticate(context)
    let id = try visibleJob(request.jobID, to: caller).id
    let output = try manager.output(id, maxChunkBytes: limits.maxChunkBytes)
    openStreams.withLock { $0 += 1 }
    defer { openStreams.withLock { $0 -= 1 } }
    // gRPC reports a client's departure through the RPC cancellation handle, not by cancelling
    // this task. Race the copy against it: otherwise a client that leaves while the job is
    // quiet keeps this handler (and a graceful shutdown) waiting until the job writes again.
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        try await context.cancellation.cancelled
        throw RPCError(code: .cancelled, message: "the client cancelled the stream")
      }
      // Paced on the connection's event loop, so that what waits for a client that stopped
      // reading is its flow-control window plus a few messages, not megabytes (`WritePacer`).
      let eventLoop = peers.eventLoop(for: context)
      let paceInterval = max(limits.maxChunkBytes, Self.paceIntervalBytes)
      group.addTask {
        var pacer = WritePacer(eventLoop: eventLoop, interval: paceInterval)
        for try await chunk in output {
          try await response.write(.with { $0.output = chunk })
          try await pacer.wrote(chunk.count)
        }
        // From the stream's own job: a job forgotten meanwhile (retention) still ends its
        // streams with their final status.
        try await response.write(.with { $0.finalStatus = Jobworker_V1_JobStatus(output.status) })
      }
      try await group.next()
      group.cancelAll()
    }
  }

  /// Output bytes a stream writes between two of its `WritePacer`'s markers: a stream has at
  /// most about twice this queued on its event loop beyond what HTTP/2 flow control holds.
  static let paceIntervalBytes = 128 * 1024

  /// Output streams being served right now.
  public var activeOutputStreams: Int { openStreams.withLock { $0 } }

  // MARK: Authorization

  private func authenticate(_ context: ServerContext) throws -> PeerIdentity {
    // A CA may also sign the online counter's gateways; their certificates are for presence
    // reports only and never act on jobs.
    do {
      return try peers.caller(of: context, roles: [.admin, .user], api: "the job API")
    } catch {
      callsRefused.increment()
      logger.info(
        "call refused", metadata: ["jobworker.peer": "\(context.remotePeer)", "error": "\(error)"])
      throw error
    }
  }

  /// The job if `caller` may see it. Someone else's job, a missing job and a forgotten one
  /// (past the retention period) give the very same error, so that job ids of other users
  /// cannot be probed.
  private func visibleJob(_ rawID: String, to caller: PeerIdentity) throws -> JobStatus {
    guard let id = JobID(rawID) else {
      throw RPCError(code: .invalidArgument, message: "job id '\(rawID.prefix(64))' is not a UUID")
    }
    let notFound = RPCError(code: .notFound, message: manager.unknownJobError(id).message)
    let status: JobStatus
    do {
      status = try manager.status(id)
    } catch let error as JobError where error.code == .notFound {
      throw notFound
    }
    guard caller.role == .admin || status.owner == caller.name else { throw notFound }
    return status
  }

  private func validate(_ request: Jobworker_V1_StartJobRequest) throws {
    func invalid(_ message: String) -> RPCError {
      RPCError(code: .invalidArgument, message: message)
    }
    guard !request.command.isEmpty else { throw invalid("command is empty") }
    let strings = [request.command, request.workingDirectory] + request.args + request.env
    guard request.args.count + request.env.count <= limits.maxArgumentCount else {
      throw invalid("more than \(limits.maxArgumentCount) arguments and environment entries")
    }
    guard strings.reduce(0, { $0 + $1.utf8.count }) <= limits.maxArgumentBytes else {
      throw invalid("command, arguments and environment exceed \(limits.maxArgumentBytes) bytes")
    }
    // execve(2) takes C strings: a NUL would silently truncate what the caller asked for.
    guard !strings.contains(where: { $0.utf8.contains(0) }) else {
      throw invalid("command, arguments and environment must not contain NUL bytes")
    }
    for entry in request.env where !entry.contains("=") || entry.hasPrefix("=") {
      throw invalid("environment entry '\(entry.prefix(64))' is not NAME=value")
    }
    // The job's init is one process and the program it forks a second: with a limit of 1 the
    // fork fails and the job can never start. (0 means the server's default.)
    guard request.limits.maxPids != 1 else {
      throw invalid(
        "max_pids 1 cannot start a job: its init and its program are 2 processes; ask for at "
          + "least 2")
    }
    for io in request.limits.io where io.device.isEmpty {
      throw invalid("an IO limit names no device")
    }
  }
}
