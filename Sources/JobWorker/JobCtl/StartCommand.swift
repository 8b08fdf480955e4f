import ArgumentParser
import JobWorkerProtos

/// `jobctl start [limits] -- CMD ARGS…`: starts a job and prints its id.
struct StartCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "start", abstract: "Start a job and print its id.")

  @OptionGroup var connection: ConnectionOptions
  @OptionGroup var job: JobOptions

  func run() async throws {
    let connection = connection.connection
    let request = try job.checkedRequest()
    let status = try await connection.withClient { client in
      try await client.startJob(request, options: connection.callOptions).job
    }
    switch self.connection.output {
    case .text: print(TerminalText.escaped(status.jobID))
    case .json: try Printer.print(status, format: .json)
    }
  }
}
