import Foundation

/// Runs a program to completion without blocking a thread of the cooperative pool.
///
/// `Process.waitUntilExit()` and reading a pipe to its end block the calling thread; in async
/// code on a small machine (the pool has one thread per core) a few such calls can starve
/// everything else, including an in-process server that the program is talking to. Here the
/// output goes to a temporary file and the exit is awaited through the termination handler.
public enum Subprocess {
  public struct Result: Sendable {
    /// Exit status, or 128 + signal number when the program was killed by a signal.
    public var status: Int32
    /// Standard output and standard error, interleaved as written.
    public var output: String
  }

  /// Runs `executable` with `arguments`; after `timeout` it is sent SIGKILL.
  public static func run(
    _ executable: String, _ arguments: [String], timeout: Duration = .seconds(30)
  ) async throws -> Result {
    let outputURL = FileManager.default.temporaryDirectory
      .appending(path: "subprocess-\(UUID().uuidString)")
    guard FileManager.default.createFile(atPath: outputURL.path, contents: nil) else {
      throw CocoaError(.fileWriteUnknown)
    }
    defer { try? FileManager.default.removeItem(at: outputURL) }
    let output = try FileHandle(forWritingTo: outputURL)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = output
    process.standardError = output
    process.standardInput = FileHandle.nullDevice

    // The handler runs on a Foundation thread; the stream hands the exit to async code.
    let (exits, exited) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    process.terminationHandler = { _ in
      exited.yield()
      exited.finish()
    }
    try process.run()
    let pid = process.processIdentifier
    await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        for await _ in exits { break }
        return true
      }
      group.addTask {
        guard (try? await Task.sleep(for: timeout)) != nil else { return false }
        kill(pid, SIGKILL)
        return false
      }
      // Exited first: stop the timer. Timer first: the kill makes the exit follow shortly.
      if await group.next() == true { group.cancelAll() } else { _ = await group.next() }
    }
    try output.close()
    let status =
      process.terminationReason == .uncaughtSignal
      ? 128 + process.terminationStatus : process.terminationStatus
    return Result(status: status, output: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "")
  }
}
