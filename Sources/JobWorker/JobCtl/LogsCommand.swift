import ArgumentParser
import GRPCCore
import JobWorkerProtos
import Synchronization

/// `jobctl logs [-f] ID`: the job's output, raw, to standard output.
struct LogsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "logs",
    abstract: "Print a job's output (stdout and stderr combined) byte for byte.",
    discussion:
      "Without -f, prints the output so far and exits; with -f, follows until the job ends.")

  @OptionGroup var connection: ConnectionOptions
  @Flag(name: .shortAndLong, help: "Follow live output until the job ends.") var follow = false
  @Argument(help: "The job id.") var id: String

  func run() async throws {
    try JobIDArgument.check(id)
    let connection = connection.connection
    let id = id
    if follow {
      let final = try await OutputStreamer.stream(id: id, connection: connection, limit: nil)
      if let final { OutputNotice.printIfIncomplete(final) }
      return
    }
    // A snapshot: learn how many bytes exist now, then read exactly those (or until the job's
    // final status if it already ended).
    // One connection for both calls.
    let snapshot = try await connection.withClient { client in
      let snapshot = try await client.getJobStatus(
        .with { $0.jobID = id }, options: connection.callOptions
      ).job
      _ = try await OutputStreamer.stream(
        id: id, client: client, connection: connection, limit: snapshot.outputBytes)
      return snapshot
    }
    OutputNotice.printIfIncomplete(snapshot)
  }
}

/// Streams a job's output to standard output.
enum OutputStreamer {
  /// Writes output until the final status arrives (returned) or `limit` bytes were written
  /// (returns nil).
  ///
  /// The call deadline (`--timeout`) covers connecting and the server's first response (its
  /// response headers, sent once it has accepted the call), not the transfer: how long the
  /// transfer takes depends on the output's size and on whoever reads our standard output
  /// (`jobctl logs ID | less`), and following lasts as long as the job.
  ///
  /// Messages are written out while the next ones are read, up to
  /// ``StandardOutput/Writer/maxQueuedBytes`` queued; past that the stream waits, suspending
  /// this task (not a thread of the cooperative pool) while standard output is blocked. So
  /// when the reader stalls, gRPC's inbound buffer fills, the HTTP/2 stream window (which
  /// ``JobWorkerConnection/streamWindowBytes`` keeps small) closes and the server's
  /// `response.write` suspends: memory stays bounded however large the output. Everything
  /// queued is written before this returns (or throws).
  static func stream(
    id: String, connection: JobWorkerConnection, limit: UInt64?
  ) async throws -> Jobworker_V1_JobStatus? {
    if limit == 0 { return nil }
    return try await connection.withClient { client in
      try await stream(id: id, client: client, connection: connection, limit: limit)
    }
  }

  /// The same on a client that is already connected (`run` streams on the connection it
  /// started the job on: one TLS handshake instead of two).
  static func stream(
    id: String, client: JobWorkerConnection.Client, connection: JobWorkerConnection,
    limit: UInt64?
  ) async throws -> Jobworker_V1_JobStatus? {
    if limit == 0 { return nil }
    return try await withFirstResponseDeadline(connection.timeout) { answered in
      try await client.streamOutput(
        .with { $0.jobID = id }, options: connection.followOptions
      ) { response in
        answered()
        let output = StandardOutput.Writer()
        var written: UInt64 = 0
        do {
          for try await message in response.messages {
            switch message.event {
            case .output(var data):
              if let limit, written + UInt64(data.count) > limit {
                data = data.prefix(Int(limit - written))
              }
              try await output.write(data)
              written += UInt64(data.count)
              // Returning ends the call: the server sees a cancelled stream and stops cheaply.
              if let limit, written >= limit {
                try await output.finish()
                return nil
              }
            case .finalStatus(let status):
              try await output.finish()
              return status
            case .none:
              continue
            }
          }
        } catch {
          // What arrived before the failure still reaches standard output, if it can.
          try? await output.finish()
          throw error
        }
        try? await output.finish()
        throw JobCtlError("the server ended the output stream without a final status")
      }
    }
  }
}

/// Runs `body`, and fails it with `deadlineExceeded` unless it calls `answered` within
/// `timeout`. After `answered`, `body` runs as long as it needs.
func withFirstResponseDeadline<Result: Sendable>(
  _ timeout: Duration,
  _ body: @escaping @Sendable (_ answered: @escaping @Sendable () -> Void) async throws -> Result
) async throws -> Result {
  let isAnswered = AnsweredFlag()
  return try await withThrowingTaskGroup(of: FirstResponseRace<Result>.self) { group in
    group.addTask {
      .finished(try await body { isAnswered.value.withLock { $0 = true } })
    }
    group.addTask {
      // Cancelled once `body` finished: then there is nothing left to time.
      guard (try? await Task.sleep(for: timeout)) != nil else { return .timerEnded }
      guard isAnswered.value.withLock({ $0 }) else {
        throw RPCError(
          code: .deadlineExceeded, message: "no response within \(timeout)")
      }
      return .timerEnded
    }
    // A throw (the timer's, or the body's) leaves this closure, which cancels the other task.
    while let outcome = try await group.next() {
      if case .finished(let result) = outcome {
        group.cancelAll()
        return result
      }
    }
    preconditionFailure("the body's task always ends with a result or an error")
  }
}

/// Whether the first response arrived; a class so that both tasks share the one lock.
private final class AnsweredFlag: Sendable {
  let value = Mutex(false)
}

/// What ended first in ``withFirstResponseDeadline(_:_:)``.
private enum FirstResponseRace<Result: Sendable>: Sendable {
  case finished(Result)
  case timerEnded
}
