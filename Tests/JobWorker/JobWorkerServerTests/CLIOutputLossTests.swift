import Foundation
import TestSupport
import Testing

/// Output past the server's cap (issue 11, item 8): standard output stays the exact stored
/// bytes, the status says the output was truncated and why, and `run` and `logs` say so in
/// one line on standard error. Before, `jobctl run` stopped at the cap, exited 0 and said
/// nothing. Part of the serialized `jobctl` suite.
extension CLITests {
  static let truncationNotice =
    "jobctl: output incomplete: the output reached the job worker's cap of 64 KiB; the rest "
    + "was dropped (65536 bytes stored)\n"

  @Test("run and logs print a notice on stderr when output passed the cap", .requires(.cgroups))
  func truncatedOutputIsReported() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    try await withJobWorker(pki: pki, maxOutputBytes: 64 << 10) { port, _ in
      let expected = String(repeating: "x", count: 64 << 10)
      let run = try await jobctl(
        ["run", "--", "sh", "-c", "head -c 100K /dev/zero | tr '\\0' x; echo END"], pki: pki,
        port: port)
      #expect(run.status == 0, "\(run.stderr)")
      #expect(run.stdout == expected, "\(run.stdout.utf8.count) bytes")
      #expect(run.stderr == Self.truncationNotice)

      let list = try await jobctl(["list", "--output", "json"], pki: pki, port: port)
      let jobs = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]
      let id = try #require(jobs?.first?["job_id"] as? String)
      #expect(jobs?.first?["output_truncated"] as? Bool == true)
      #expect(
        jobs?.first?["output_truncated_reason"] as? String
          == "the output reached the job worker's cap of 64 KiB; the rest was dropped")
      #expect(jobs?.first?["output_bytes"] as? Int == 64 << 10)

      let status = try await jobctl(["status", id], pki: pki, port: port)
      #expect(
        status.stdout.contains(
          "output:   64.0 KiB (truncated: the output reached the job worker's cap of 64 KiB; "
            + "the rest was dropped)\n"), "\(status.stdout)")

      for arguments in [["logs", id], ["logs", "-f", id]] {
        let logs = try await jobctl(arguments, pki: pki, port: port)
        #expect(logs.status == 0, "\(arguments): \(logs.stderr)")
        #expect(logs.stdout == expected, "\(arguments): \(logs.stdout.utf8.count) bytes")
        #expect(logs.stderr == Self.truncationNotice, "\(arguments)")
      }

      // Complete output: no notice.
      let small = try await jobctl(["run", "--", "echo", "hi"], pki: pki, port: port)
      #expect(small.stdout == "hi\n")
      #expect(small.stderr.isEmpty, "\(small.stderr)")
    }
  }
}
