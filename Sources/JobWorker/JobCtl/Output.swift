import Dispatch
import Foundation
import JobWorkerProtos
import Synchronization

/// Prints job statuses as text for people or JSON for scripts.
enum Printer {
  static func print(_ job: Jobworker_V1_JobStatus, format: OutputFormat) throws {
    switch format {
    case .json: try printJSON(JobJSON(job))
    case .text: Swift.print(text(job))
    }
  }

  static func print(list jobs: [Jobworker_V1_JobStatus], format: OutputFormat) throws {
    switch format {
    case .json:
      try printJSON(jobs.map(JobJSON.init))
    case .text:
      guard !jobs.isEmpty else {
        Swift.print("no jobs")
        return
      }
      // Every cell escaped: a newline or escape sequence in one job's fields must not
      // forge rows or columns, or reach the terminal (see TerminalText).
      let rows =
        [["ID", "OWNER", "STATE", "STARTED", "COMMAND"]]
        + jobs.map { job in
          [
            TerminalText.escaped(job.jobID), TerminalText.escaped(job.owner), state(job),
            date(job.startedAt.date), commandLine(job),
          ]
        }
      let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
      for row in rows {
        var line = ""
        for column in 0..<4 {
          line += row[column].padding(toLength: widths[column] + 2, withPad: " ", startingAt: 0)
        }
        Swift.print(line + row[4])
      }
    }
  }

  static func text(_ job: Jobworker_V1_JobStatus) -> String {
    var lines = [
      "id:       \(TerminalText.escaped(job.jobID))",
      "owner:    \(TerminalText.escaped(job.owner))",
      "command:  \(commandLine(job))",
      "state:    \(state(job))",
      "started:  \(date(job.startedAt.date))",
    ]
    if job.hasEndedAt { lines.append("ended:    \(date(job.endedAt.date))") }
    let usage = job.usage
    lines.append(
      "usage:    cpu \(usage.cpuUsageUsec / 1000) ms, memory peak \(bytes(usage.memoryPeakBytes)), "
        + "io read \(bytes(usage.ioReadBytes)), write \(bytes(usage.ioWriteBytes))")
    let limits = job.limits
    var limitText = [
      limits.cpuMillicores > 0 ? "cpu \(limits.cpuMillicores)m" : "cpu unlimited",
      limits.memoryBytes > 0 ? "memory \(bytes(limits.memoryBytes))" : "memory unlimited",
      limits.maxPids > 0 ? "pids \(limits.maxPids)" : "pids unlimited",
    ]
    for io in limits.io {
      let device = TerminalText.escaped(io.device)
      limitText.append(
        "io \(device) r \(bytes(io.readBytesPerSecond))/s w \(bytes(io.writeBytesPerSecond))/s")
    }
    lines.append("limits:   " + limitText.joined(separator: ", "))
    lines.append("output:   \(bytes(job.outputBytes))" + OutputNotice.suffix(job))
    return lines.joined(separator: "\n")
  }

  static func state(_ job: Jobworker_V1_JobStatus) -> String {
    switch job.state {
    case .running: "running"
    case .exited: "exited (code \(job.exitCode))"
    case .signaled: "killed by signal \(job.signal)"
    case .stopped: "stopped (signal \(job.signal))"
    case .oomKilled: "killed: out of memory"
    default: "unknown"
    }
  }

  /// The command and its arguments on one line, each escaped for the terminal; words with a
  /// space are quoted.
  static func commandLine(_ job: Jobworker_V1_JobStatus) -> String {
    ([job.command] + job.args).map(TerminalText.escaped)
      .map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
  }

  static func date(_ date: Date) -> String {
    date.formatted(.iso8601)
  }

  static func bytes(_ count: UInt64) -> String {
    if count < 1024 { return "\(count) B" }
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var value = Double(count) / 1024
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
      value /= 1024
      unit += 1
    }
    return String(format: "%.1f %@", value, units[unit])
  }

  private static func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    // Exact values; only the characters a terminal would act on are written as JSON escapes.
    Swift.print(TerminalText.jsonSafe(String(decoding: try encoder.encode(value), as: UTF8.self)))
  }
}

/// The JSON shape of a job: stable field names, snake_case like the proto.
struct JobJSON: Encodable {
  var jobId: String
  var owner: String
  var command: String
  var args: [String]
  var state: String
  var exitCode: Int32?
  var signal: Int32?
  var startedAt: Date
  var endedAt: Date?
  var cpuUsageUsec: UInt64
  var memoryPeakBytes: UInt64
  var ioReadBytes: UInt64
  var ioWriteBytes: UInt64
  var outputBytes: UInt64
  var outputTruncated: Bool
  var outputTruncatedReason: String?

  enum CodingKeys: String, CodingKey {
    case jobId = "job_id"
    case exitCode = "exit_code"
    case startedAt = "started_at"
    case endedAt = "ended_at"
    case cpuUsageUsec = "cpu_usage_usec"
    case memoryPeakBytes = "memory_peak_bytes"
    case ioReadBytes = "io_read_bytes"
    case ioWriteBytes = "io_write_bytes"
    case outputBytes = "output_bytes"
    case outputTruncated = "output_truncated"
    case outputTruncatedReason = "output_truncated_reason"
    case owner, command, args, state, signal
  }

  init(_ job: Jobworker_V1_JobStatus) {
    jobId = job.jobID
    owner = job.owner
    command = job.command
    args = job.args
    switch job.state {
    case .running: state = "running"
    case .exited: state = "exited"
    case .signaled: state = "signaled"
    case .stopped: state = "stopped"
    case .oomKilled: state = "oom_killed"
    default: state = "unknown"
    }
    exitCode = job.state == .exited ? job.exitCode : nil
    signal = [.signaled, .stopped, .oomKilled].contains(job.state) ? job.signal : nil
    startedAt = job.startedAt.date
    endedAt = job.hasEndedAt ? job.endedAt.date : nil
    cpuUsageUsec = job.usage.cpuUsageUsec
    memoryPeakBytes = job.usage.memoryPeakBytes
    ioReadBytes = job.usage.ioReadBytes
    ioWriteBytes = job.usage.ioWriteBytes
    outputBytes = job.outputBytes
    outputTruncated = job.outputTruncated
    outputTruncatedReason = job.outputTruncated ? OutputNotice.reason(job) : nil
  }
}

/// Raw job output to standard output, byte for byte (never decoded as text).
///
/// The writes of one stream are pipelined (``Writer``): a message is handed to the writing
/// thread and the next one is read while it is written, up to ``Writer/maxQueuedBytes``
/// queued; past that the stream waits. So a fast reader of our standard output does not pay
/// two thread hand-offs per message in series with the network, and a stalled one still
/// holds the transfer back (the gRPC buffer fills, the HTTP/2 window closes, the server
/// waits) with at most that much queued here.
enum StandardOutput {
  /// The one thread that blocks in write(2) when standard output does (a full pipe, a
  /// terminal on hold). A serial queue keeps the writes in order.
  private static let queue = DispatchQueue(label: "jobctl.stdout")

  /// One stream's writes to standard output, in order.
  final class Writer: Sendable {
    /// Bytes handed to the writing thread and not yet written, beyond which ``write(_:)``
    /// waits.
    static let maxQueuedBytes = 1 << 20

    private struct State {
      var queued = 0
      /// The first write that failed; every later call throws it.
      var failure: (any Error)?
      /// The caller waiting for the queue to drain to `waitingFor` bytes or fewer.
      var waiter: CheckedContinuation<Void, any Error>?
      var waitingFor = 0
    }

    private let state = Mutex(State())

    init() {}

    /// Queues `bytes`; suspends the caller (never a thread of the cooperative pool) while
    /// more than ``maxQueuedBytes`` are queued. Throws the error of an earlier write that
    /// failed (standard output closed).
    ///
    /// Cancellation resumes the caller at once with `CancellationError` (a second ^C must end
    /// `run` even while standard output is stuck); queued writes then finish or fail on their
    /// own, and the process is about to exit anyway.
    func write(_ bytes: Data) async throws {
      try Task.checkCancellation()
      let queued = try state.withLock { state -> Int in
        if let failure = state.failure { throw failure }
        state.queued += bytes.count
        return state.queued
      }
      StandardOutput.queue.async { self.written(bytes) }
      if queued > Self.maxQueuedBytes { try await drained(to: Self.maxQueuedBytes / 2) }
    }

    /// Waits until everything queued is written; throws if a write failed.
    func finish() async throws {
      try await drained(to: 0)
    }

    private func drained(to bytes: Int) async throws {
      try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { continuation in
          let ready = state.withLock { state -> Result<Void, any Error>? in
            if let failure = state.failure { return .failure(failure) }
            if state.queued <= bytes { return .success(()) }
            // Cancelled before the waiter is set: the handler found none to resume.
            if Task.isCancelled { return .failure(CancellationError()) }
            state.waiter = continuation
            state.waitingFor = bytes
            return nil
          }
          if let ready { continuation.resume(with: ready) }
        }
      } onCancel: {
        state.withLock { $0.waiter.take() }?.resume(throwing: CancellationError())
      }
    }

    /// On the writing thread: writes `bytes` (unless an earlier write failed), then wakes the
    /// waiter if the queue drained far enough.
    private func written(_ bytes: Data) {
      let failed = state.withLock { $0.failure != nil }
      let result = failed ? .success(()) : Result { try StandardOutput.writeBlocking(bytes) }
      let waiter = state.withLock {
        state -> (CheckedContinuation<Void, any Error>, Result<Void, any Error>)? in
        state.queued -= bytes.count
        if case .failure(let error) = result, state.failure == nil { state.failure = error }
        guard state.waiter != nil else { return nil }
        if let failure = state.failure { return (state.waiter.take()!, .failure(failure)) }
        guard state.queued <= state.waitingFor else { return nil }
        return (state.waiter.take()!, .success(()))
      }
      if let (continuation, result) = waiter { continuation.resume(with: result) }
    }
  }

  /// write(2) until done; blocks while standard output does.
  fileprivate static func writeBlocking(_ bytes: Data) throws {
    try bytes.withUnsafeBytes { buffer in
      var offset = 0
      while offset < buffer.count {
        let written = Foundation.write(1, buffer.baseAddress! + offset, buffer.count - offset)
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else {
          throw JobCtlError(
            "cannot write to standard output: \(String(cString: strerror(errno)))")
        }
        offset += written
      }
    }
  }
}
