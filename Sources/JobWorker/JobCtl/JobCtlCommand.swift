public import ArgumentParser

/// `jobctl`: the command-line client of the job worker.
public struct JobCtlCommand: AsyncParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "jobctl",
    abstract: "Run and watch Linux processes on a job worker, over mutual TLS 1.3.",
    discussion: """
      First time: `jobctl certs init` creates a CA, a server certificate and client
      certificates for `admin` (role admin) and `alice` (role user) in ~/.config/jobctl.
      Start the server with those (see `jobworker --help`), then for example:

        jobctl run -- sh -c 'echo hello; exit 3'
        jobctl --user alice start --memory 256M --cpu 500 -- sleep 60
        jobctl logs -f 1f0c9a…
      """,
    subcommands: [
      StartCommand.self, RunCommand.self, StatusCommand.self, StopCommand.self, ListCommand.self,
      LogsCommand.self, CertsCommand.self,
    ])

  public init() {}
}
