import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

@Suite("Resource limits")
struct LimitsTests {
  @Test(.requires(.cgroups)) func memoryHogIsOOMKilled() async throws {
    try await withManager { manager in
      let (status, _) = try await manager.run(
        "tail", "/dev/zero", limits: ResourceLimits(memoryBytes: 32 << 20))
      #expect(status.state == .oomKilled)
      #expect(status.usage.memoryPeakBytes > 16 << 20)
      #expect(status.usage.memoryPeakBytes <= 33 << 20)
    }
  }

  /// A busy loop limited to a tenth of a core gets at most that: the kernel throttles it.
  ///
  /// The bound follows from CFS bandwidth control: 100 millicores is 10 ms of quota per 100 ms
  /// period (CgroupV1/CgroupV2 set the period), so over a wall-clock window W the cgroup can
  /// use at most 10 ms for every period the window touches: W / 10 + 2 periods' quota (the
  /// partial periods at both ends). W is measured around the whole job life we look at, from
  /// before `start` until after the usage is read, because on a loaded machine a 1 s sleep
  /// can last several seconds (a fixed bound of "1 s of quota" failed there at 316 ms after a
  /// long sleep). The 10% on top covers accounting granularity, not scheduling.
  @Test(.requires(.cgroups)) func cpuBurnerIsThrottled() async throws {
    try await withManager { manager in
      let clock = ContinuousClock()
      let before = clock.now
      let job = try await manager.start(
        JobSpec(
          command: "sh", arguments: ["-c", "while :; do :; done"],
          limits: ResourceLimits(cpuMillicores: 100)))
      try await Task.sleep(for: .seconds(1))
      let usage = try manager.status(job.id).usage
      let window = clock.now - before
      let throttled = manager.cgroup.throttledPeriods(job.id.description) ?? 0
      _ = try await manager.stop(job.id)
      let windowMicros = window.components.seconds * 1_000_000
        + window.components.attoseconds / 1_000_000_000_000
      let quotaPerPeriod: Int64 = 10_000
      let allowed = (windowMicros / 10 + 2 * quotaPerPeriod) * 11 / 10
      #expect(throttled >= 1, "a busy loop over its quota is throttled")
      #expect(
        Int64(usage.cpuMicros) <= allowed,
        "used \(usage.cpuMicros) µs of CPU in a \(window) window; the quota allows \(allowed)")
      // It ran at all (a sanity check of the accounting, far below any plausible share).
      #expect(usage.cpuMicros > 1_000)
    }
  }

  /// A fork bomb runs into its pids limit (forks fail: the shell says "Cannot fork"), never
  /// has more processes than allowed, and ends cleanly: by itself when the shell gives up, or
  /// by `stop`.
  @Test(.requires(.cgroups)) func forkBombHitsPidsLimit() async throws {
    try await withManager(grace: .milliseconds(300)) { manager in
      let job = try await manager.start(
        JobSpec(
          command: "sh", arguments: ["-c", "bomb() { bomb & bomb & wait; }; bomb"],
          limits: ResourceLimits(maxPids: 20)))
      var peak = 0
      for _ in 0..<20 where !(try manager.status(job.id).state.isFinal) {
        peak = max(peak, manager.cgroup.processes(job.id.description).count)
        try await Task.sleep(for: .milliseconds(10))
      }
      let stopped = try await manager.stop(job.id)
      let output = String(decoding: try await manager.collect(job.id), as: UTF8.self)
      #expect(peak <= 20)
      #expect(output.contains("Cannot fork"))
      #expect(stopped.state.isFinal)
      #expect(manager.cgroup.processes(job.id.description).isEmpty)
    }
  }

  /// IO limits land in the kernel's files for the device's major:minor.
  @Test(
    .requires(.cgroups),
    .enabled(if: Self.rootBlockDevice() != nil, "needs / on a block device (not an overlay)"))
  func ioLimitsReachTheKernel() async throws {
    try await withManager { manager in
      let (device, number) = try #require(Self.rootBlockDevice())
      let job = try await manager.start(
        JobSpec(
          command: "sleep", arguments: ["600"],
          limits: ResourceLimits(
            io: [IOLimit(device: device, readBytesPerSecond: 1 << 20, writeIOPS: 100)])))
      let name = manager.configuration.cgroupName
      if manager.cgroup.version == "v1" {
        let dir = "/sys/fs/cgroup/blkio/\(name)/\(job.id)"
        #expect(FileSystem.read(dir + "/blkio.throttle.read_bps_device") == "\(number) 1048576\n")
        #expect(FileSystem.read(dir + "/blkio.throttle.write_iops_device") == "\(number) 100\n")
      } else {
        let io = FileSystem.read("/sys/fs/cgroup/\(name)/\(job.id)/io.max") ?? ""
        #expect(io.contains("\(number) rbps=1048576 wbps=max riops=max wiops=100"))
      }
      _ = try await manager.stop(job.id)
    }
  }

  /// The block device under `/`: its /dev path and "major:minor".
  static func rootBlockDevice() -> (String, String)? {
    var st = stat()
    guard stat("/", &st) == 0 else { return nil }
    let dev = UInt64(st.st_dev)
    let number =
      "\(((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)):\((dev & 0xff) | ((dev >> 12) & ~0xff))"
    let uevent = FileSystem.read("/sys/dev/block/\(number)/uevent") ?? ""
    guard let line = uevent.split(separator: "\n").first(where: { $0.hasPrefix("DEVNAME=") })
    else { return nil }
    return ("/dev/" + line.dropFirst("DEVNAME=".count), number)
  }
}
