import Foundation
import NIOCore
import TestSupport
import Testing

@testable import ConnectionKit

/// The loops follow the CPUs the process may run on, not the host's.
@Suite struct ProcessEventLoopsTests {
  /// The kernel's own `Cpus_allowed` of a process pinned with `taskset` to CPU 0.
  @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset")))
  func aProcessPinnedToOneCPUCountsOne() async throws {
    let pinned = try await runProcess(
      "/usr/bin/taskset", ["-c", "0", "/bin/cat", "/proc/self/status"])
    #expect(pinned.status == 0, "\(pinned.output)")
    #expect(ProcessEventLoops.cpusAllowed(status: pinned.stdout) == 1)
    let free = ProcessEventLoops.usableCoreCount()
    #expect(free >= 1 && free <= System.coreCount)
  }

  @Test func theAffinityMaskIsCounted() {
    #expect(ProcessEventLoops.cpusAllowed(status: "Name:\tx\nCpus_allowed:\tffff\n") == 16)
    #expect(
      ProcessEventLoops.cpusAllowed(
        status: "Cpus_allowed:\t00000000,00000003\nCpus_allowed_list:\t0-1")
        == 2)
    #expect(ProcessEventLoops.cpusAllowed(status: "Name:\tx\n") == nil)
  }

  @Test func theGroupHasOneLoopPerUsableCPU() {
    let loops = ProcessEventLoops.group.makeIterator().map { $0 }
    #expect(loops.count == ProcessEventLoops.usableCoreCount())
  }
}
