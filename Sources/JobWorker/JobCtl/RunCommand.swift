import ArgumentParser
import JobWorkerProtos

/// `jobctl run [limits] -- CMD ARGS…`: start, stream, exit like the job did.
struct RunCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract:
      "Start a job, stream its output, and exit with its exit code (128+N if killed by signal N).")

  @OptionGroup var connection: ConnectionOptions
  @OptionGroup var job: JobOptions

  func run() async throws {
    let connection = connection.connection
    let request = job.request
    let started = try await connection.withClient { client in
      try await client.startJob(request, options: connection.callOptions).job
    }
    // TODO: on SIGINT, stop the job before exiting (today ^C leaves it running; `jobctl stop`).
    guard
      let final = try await OutputStreamer.stream(
        id: started.jobID, connection: connection, limit: nil)
    else { throw ExitCode.failure }
    throw ExitCode(Self.exitCode(final))
  }

  static func exitCode(_ status: Jobworker_V1_JobStatus) -> Int32 {
    switch status.state {
    case .exited: status.exitCode
    case .signaled, .stopped, .oomKilled: 128 + status.signal
    default: 1
    }
  }
}
