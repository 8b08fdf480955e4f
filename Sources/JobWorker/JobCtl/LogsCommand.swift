import ArgumentParser
import GRPCCore
import JobWorkerProtos

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
    let connection = connection.connection
    let id = id
    if follow {
      _ = try await OutputStreamer.stream(id: id, connection: connection, limit: nil)
      return
    }
    // A snapshot: learn how many bytes exist now, then read exactly those (or until the job's
    // final status if it already ended), all under the call deadline.
    let stored = try await connection.withClient { client in
      try await client.getJobStatus(.with { $0.jobID = id }, options: connection.callOptions)
        .job.outputBytes
    }
    _ = try await OutputStreamer.stream(id: id, connection: connection, limit: stored)
  }
}

/// Streams a job's output to standard output.
enum OutputStreamer {
  /// Writes output until the final status arrives (returned) or `limit` bytes were written
  /// (returns nil). With no limit there is no deadline: following lasts as long as the job.
  static func stream(
    id: String, connection: JobWorkerConnection, limit: UInt64?
  ) async throws -> Jobworker_V1_JobStatus? {
    let options = limit == nil ? connection.followOptions : connection.callOptions
    if limit == 0 { return nil }
    return try await connection.withClient { client in
      try await client.streamOutput(.with { $0.jobID = id }, options: options) { response in
        var written: UInt64 = 0
        for try await message in response.messages {
          switch message.event {
          case .output(var data):
            if let limit, written + UInt64(data.count) > limit {
              data = data.prefix(Int(limit - written))
            }
            try StandardOutput.write(data)
            written += UInt64(data.count)
            // Returning ends the call: the server sees a cancelled stream and stops cheaply.
            if let limit, written >= limit { return nil }
          case .finalStatus(let status):
            return status
          case .none:
            continue
          }
        }
        throw JobCtlError("the server ended the output stream without a final status")
      }
    }
  }
}
