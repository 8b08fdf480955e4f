import ArgumentParser
import JobWorkerProtos

/// `jobctl stop ID`.
struct StopCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "stop",
    abstract:
      "Stop a job: SIGTERM, then SIGKILL after a grace period. Stopping an ended job is a no-op.")

  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "The job id.") var id: String

  func run() async throws {
    try JobIDArgument.check(id)
    let connection = connection.connection
    let id = id
    let status = try await connection.withClient { client in
      try await client.stopJob(.with { $0.jobID = id }, options: connection.callOptions).job
    }
    try Printer.print(status, format: self.connection.output)
  }
}
