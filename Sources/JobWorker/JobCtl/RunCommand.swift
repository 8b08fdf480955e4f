import ArgumentParser
import Dispatch
import Foundation
import JobWorkerProtos

/// `jobctl run [limits] -- CMD ARGS…`: start, stream, exit like the job did.
struct RunCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract:
      "Start a job, stream its output, and exit with its exit code (128+N if killed by signal N).")

  @OptionGroup var connection: ConnectionOptions
  @OptionGroup var job: JobOptions

  /// How the streaming part of `run` ended.
  private enum Outcome: Sendable {
    /// The final status, or nil if the stream ended without one.
    case ended(Jobworker_V1_JobStatus?)
    /// ^C twice: the job was asked to stop, and the user does not want to wait for it.
    case interruptedTwice
  }

  func run() async throws {
    let connection = connection.connection
    let request = try job.checkedRequest()
    // One connection (one TLS handshake) for the start, the output and a stop on ^C.
    let outcome = try await connection.withClient { client -> Outcome in
      let started = try await client.startJob(request, options: connection.callOptions).job
      // ^C stops the job (a job started by `run` belongs to this terminal); the stream then
      // ends with the final status as usual. A second ^C exits at once.
      let interrupts = Interrupts()
      defer { interrupts.cancel() }
      let signals = interrupts.stream
      return try await withThrowingTaskGroup(of: Outcome?.self) { group -> Outcome in
        group.addTask {
          .ended(
            try await OutputStreamer.stream(
              id: started.jobID, client: client, connection: connection, limit: nil))
        }
        group.addTask {
          var iterator = signals.makeAsyncIterator()
          guard await iterator.next() != nil else { return nil }
          FileHandle.standardError.write(
            Data("jobctl: stopping job \(TerminalText.escaped(started.jobID))\n".utf8))
          _ = try? await client.stopJob(
            .with { $0.jobID = started.jobID }, options: connection.callOptions)
          guard await iterator.next() != nil else { return nil }
          return .interruptedTwice
        }
        defer { group.cancelAll() }
        while let result = try await group.next() {
          if let result { return result }
        }
        return .ended(nil)
      }
    }
    switch outcome {
    case .interruptedTwice:
      throw ExitCode(130)
    case .ended(nil):
      throw ExitCode.failure
    case .ended(let final?):
      OutputNotice.printIfIncomplete(final)
      throw ExitCode(Self.exitCode(final))
    }
  }

  static func exitCode(_ status: Jobworker_V1_JobStatus) -> Int32 {
    switch status.state {
    case .exited: status.exitCode
    case .signaled, .stopped, .oomKilled: 128 + status.signal
    default: 1
    }
  }
}

/// SIGINT as an async sequence until ``cancel()``, which restores the default action.
struct Interrupts {
  let stream: AsyncStream<Void>
  private let source: any DispatchSourceSignal

  init() {
    let (stream, continuation) = AsyncStream.makeStream(
      of: Void.self, bufferingPolicy: .bufferingNewest(2))
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT)
    source.setEventHandler { continuation.yield() }
    source.setCancelHandler { continuation.finish() }
    source.resume()
    self.stream = stream
    self.source = source
  }

  func cancel() {
    source.cancel()
    signal(SIGINT, SIG_DFL)
  }
}
