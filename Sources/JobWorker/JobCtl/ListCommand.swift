import ArgumentParser
import JobWorkerProtos

/// `jobctl list`: the caller's jobs (every job for an admin).
struct ListCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "list", abstract: "List the jobs you may see (all jobs for an admin).")

  @OptionGroup var connection: ConnectionOptions

  func run() async throws {
    let connection = connection.connection
    let jobs = try await connection.withClient { client in
      try await client.listJobs(Jobworker_V1_ListJobsRequest(), options: connection.callOptions)
        .jobs
    }
    try Printer.print(list: jobs, format: self.connection.output)
  }
}
