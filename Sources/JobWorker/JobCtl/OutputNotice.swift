import Foundation
import JobWorkerProtos

/// Says so when a job's output is incomplete: standard output carries the job's bytes exactly,
/// so the notice is one line on standard error, after them (issue 11, item 8: `jobctl run`
/// used to stop at the server's 64 MiB cap, exit 0 and say nothing).
enum OutputNotice {
  /// The server's reason, or a generic one from a server that does not send it.
  static func reason(_ job: Jobworker_V1_JobStatus) -> String {
    job.outputTruncatedReason.isEmpty
      ? "the job worker dropped output past what it stored" : job.outputTruncatedReason
  }

  /// `jobctl: output incomplete: REASON (stored N bytes)` on standard error, if it is.
  static func printIfIncomplete(_ job: Jobworker_V1_JobStatus) {
    guard job.outputTruncated else { return }
    let line =
      "jobctl: output incomplete: \(TerminalText.escaped(reason(job))) "
      + "(\(job.outputBytes) bytes stored)\n"
    FileHandle.standardError.write(Data(line.utf8))
  }

  /// ` (truncated: REASON)` after the output size in `jobctl status`, or nothing.
  static func suffix(_ job: Jobworker_V1_JobStatus) -> String {
    job.outputTruncated ? " (truncated: \(TerminalText.escaped(reason(job))))" : ""
  }
}
