import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

/// Each job has its own size-limited tmpfs on /tmp and /dev/shm (issue 11, item 6). Before,
/// jobs wrote to the host's: files outlived the job (a job limited to 64 MiB left 150 MB in
/// /dev/shm) and jobs, all running as the same user, could read each other's.
@Suite("Private scratch space")
struct ScratchSpaceTests {
  @Test(.requires(.cgroups)) func scratchIsPrivateAndGoesWithTheJob() async throws {
    try await withManager { manager in
      let marker = "jobworker-scratch-\(UUID().uuidString.prefix(8).lowercased())"
      let writer = try await manager.start(
        JobSpec(
          command: "sh",
          arguments: [
            "-c",
            "echo secret > /tmp/\(marker) && echo secret > /dev/shm/\(marker) && echo ready"
              + " && exec sleep 600",
          ]))
      var iterator = try manager.output(writer.id).makeAsyncIterator()
      let ready = try await iterator.next().map { String(decoding: $0, as: UTF8.self) }
      #expect(ready == "ready\n")

      // Neither the host nor another job sees the running job's files.
      for directory in ["/tmp", "/dev/shm"] {
        #expect(!FileSystem.exists("\(directory)/\(marker)"), "\(directory) on the host")
      }
      let (status, output) = try await manager.run(
        "sh", "-c", "ls -A /tmp /dev/shm; cat /tmp/\(marker) /dev/shm/\(marker)")
      #expect(status.state == .exited(code: 1))
      #expect(!output.contains("secret"), "\(output)")
      #expect(output.contains("/tmp/\(marker): No such file or directory"), "\(output)")
      #expect(output.contains("/dev/shm/\(marker): No such file or directory"), "\(output)")

      // The job's own mounts are gone with it: nothing reached the host.
      _ = try await manager.stop(writer.id)
      for directory in ["/tmp", "/dev/shm"] {
        #expect(!FileSystem.exists("\(directory)/\(marker)"), "\(directory) on the host")
      }
    }
  }

  /// Writing past the configured size fails with ENOSPC in both; the size is at most the
  /// job's memory limit.
  @Test(.requires(.cgroups)) func scratchIsSizeLimited() async throws {
    try await withManager(scratchBytes: 1 << 20) { manager in
      let (status, output) = try await manager.run(
        "sh", "-c",
        "head -c 2M /dev/zero > /tmp/big; echo tmp $?; head -c 2M /dev/zero > /dev/shm/big;"
          + " echo shm $?; stat -f -c '%b %S' /tmp /dev/shm")
      #expect(status.state == .exited(code: 0))
      let lines = output.split(separator: "\n").map(String.init)
      #expect(lines.filter { $0.hasSuffix("No space left on device") }.count == 2, "\(output)")
      #expect(lines.contains("tmp 1") && lines.contains("shm 1"), "\(output)")
      #expect(sizes(lines) == [1 << 20, 1 << 20], "\(output)")
    }
    try await withManager(scratchBytes: 64 << 20) { manager in
      let (_, output) = try await manager.run(
        "stat", "-f", "-c", "%b %S", "/tmp", "/dev/shm",
        limits: ResourceLimits(memoryBytes: 16 << 20))
      #expect(sizes(output.split(separator: "\n").map(String.init)) == [16 << 20, 16 << 20])
    }
  }

  /// `BLOCKS BLOCKSIZE` lines of `stat -f` as byte counts.
  private func sizes(_ lines: [String]) -> [UInt64] {
    lines.compactMap { line in
      let fields = line.split(separator: " ").compactMap { UInt64($0) }
      return fields.count == 2 ? fields[0] * fields[1] : nil
    }
  }
}
