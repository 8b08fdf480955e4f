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
      FileHandle.standardError.write(Data("jobctl: error: \(error.message)\n".utf8))
      exit(1)
    } catch {
      JobCtlCommand.exit(withError: error)
    }
  }
}
