import ArgumentParser
import JobWorkerProtos

/// `jobctl status ID`.
struct StatusCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status", abstract: "Show a job's state, resource usage and limits.")

  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "The job id `jobctl start` printed.") var id: String

  func run() async throws {
    try JobIDArgument.check(id)
    let connection = connection.connection
    let id = id
    let status = try await connection.withClient { client in
      try await client.getJobStatus(.with { $0.jobID = id }, options: connection.callOptions).job
    }
    try Printer.print(status, format: self.connection.output)
  }
}
