import ArgumentParser
import Foundation

/// The `jobctl` process: parses, runs, and turns failures into one line on stderr.
public enum JobCtlMain {
  public static func main(arguments: [String]? = nil) async -> Never {
    do {
      var command = try JobCtlCommand.parseAsRoot(arguments)
      if var command = command as? any AsyncParsableCommand {
        try await command.run()
      } else {
        try command.run()
      }
      exit(0)
    } catch let error as JobCtlError {
      // Messages quote what the server and other users sent (job ids, server messages):
      // escaped, so that they can neither reach the terminal nor span several lines.
      FileHandle.standardError.write(
        Data("jobctl: error: \(TerminalText.escaped(error.message))\n".utf8))
      exit(1)
    } catch {
      let code = JobCtlCommand.exitCode(for: error)
      if code.isSuccess || error is ExitCode {
        // --help, --version, or `run` passing on the job's exit code.
        JobCtlCommand.exit(withError: error)
      }
      // Usage errors: one line (the first of ArgumentParser's message) plus where help is.
      let message =
        JobCtlCommand.message(for: error).split(separator: "\n").first ?? "invalid usage"
      FileHandle.standardError.write(
        Data("jobctl: error: \(TerminalText.escaped(message)) (see `jobctl help`)\n".utf8))
      exit(code.rawValue)
    }
  }
}
