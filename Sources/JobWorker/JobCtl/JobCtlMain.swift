import ArgumentParser
import CMalloc
import Foundation

/// The `jobctl` process: parses, runs, and turns failures into one line on stderr.
public enum JobCtlMain {
  public static func main(arguments: [String]? = nil) async -> Never {
    keepFreedMemoryForReuse()
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

  /// Output arrives in messages of up to 255 KiB, each decoded into its own buffer and freed
  /// once written. With glibc's adaptive thresholds the allocator hands the freed heap back to
  /// the kernel (`madvise`) several times a second and the next messages fault the same pages
  /// in again: 11,000–27,000 minor faults per 256 MiB of `jobctl logs`. With allocations up
  /// to 1 MiB kept on the heap and up to 4 MiB of free heap kept per arena: 2,700–3,900 faults
  /// and 7–15 % less CPU (docs/benchmarks.md, "One client against the stack's floor and the
  /// machine's ceiling"). `jobctl` lives for one command, and what it keeps is bounded by what
  /// it had in use at once.
  /// - Returns: Whether the C library took both settings (glibc does; others are left alone).
  @discardableResult
  static func keepFreedMemoryForReuse() -> Bool {
    cmalloc_set_thresholds(1 << 20, 4 << 20) == 1
  }
}
