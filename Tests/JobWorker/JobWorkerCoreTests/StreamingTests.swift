import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

@Suite("Output streaming")
struct StreamingTests {
  /// Three readers attach while the job runs, a fourth after it ended: all four get the same,
  /// complete bytes from the first one.
  @Test(.requires(.cgroups)) func concurrentReadersGetIdenticalCompleteOutput() async throws {
    try await withManager { manager in
      let job = try await manager.start(
        JobSpec(
          command: "sh", arguments: ["-c", "for i in 1 2 3 4 5; do seq 20000; sleep 0.1; done"]))
      let outputs = try await withThrowingTaskGroup(of: [UInt8].self) { group in
        for _ in 0..<3 { group.addTask { try await manager.collect(job.id) } }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      let late = try await manager.collect(job.id)
      let expected = Array(
        String(repeating: (1...20000).map { "\($0)\n" }.joined(), count: 5).utf8)
      #expect(outputs.count == 3)
      for output in outputs + [late] {
        #expect(output.count == expected.count)
        #expect(output == expected)
      }
      let status = try manager.status(job.id)
      #expect(status.state == .exited(code: 0))
      // Neither the pump nor any finished reader keeps the log open.
      #expect(openDescriptors(to: try #require(manager.job(job.id)).logPath) == 0)
      #expect(status.outputBytes == UInt64(expected.count))
      #expect(!status.outputTruncated)
    }
  }

  /// Past the cap the job keeps running (its pipe is drained) and the rest is dropped.
  @Test(.requires(.cgroups)) func outputCap() async throws {
    try await withManager(maxOutputBytes: 1000) { manager in
      let (status, output) = try await manager.run("seq", "100000")
      #expect(status.state == .exited(code: 0))
      #expect(status.outputBytes == 1000)
      #expect(status.outputTruncated)
      #expect(output.utf8.count == 1000)
      #expect(output.hasPrefix("1\n2\n3\n"))
    }
  }

  /// A reader whose task is cancelled while it waits for more output ends promptly with
  /// CancellationError and leaves no waiter behind.
  @Test(.requires(.cgroups)) func cancelledReaderLeavesNothingBehind() async throws {
    try await withManager { manager in
      let job = try await manager.start(
        JobSpec(command: "sh", arguments: ["-c", "echo first; exec sleep 600"]))
      let reader = Task {
        var received: [UInt8] = []
        do {
          for try await chunk in try manager.output(job.id) { received += chunk }
          return "finished"
        } catch is CancellationError {
          return String(decoding: received, as: UTF8.self)
        }
      }
      // Wait until the reader has the first line and sleeps on the next wake-up.
      let internalJob = try #require(manager.job(job.id))
      while internalJob.waiterCount == 0 { try await Task.sleep(for: .milliseconds(10)) }
      reader.cancel()
      #expect(try await reader.value == "first\n")
      #expect(internalJob.waiterCount == 0)
      // The cancelled reader's descriptor is closed; only the pump's remains.
      #expect(openDescriptors(to: internalJob.logPath) == 1)
      let stopped = try await manager.stop(job.id)
      #expect(stopped.state == .stopped(signal: SIGTERM))
    }
  }
}
