import Foundation
import Glibc
import Logging
import TestSupport
import Testing

@testable import JobWorkerCore

@Suite("Isolation and stop")
struct IsolationTests {
  /// The job has its own PID namespace and /proc: our init is PID 1, the program PID 2, and
  /// no process of the host is visible.
  @Test(.requires(.cgroups)) func ownProcessNamespace() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run(
        "sh", "-c", "cat /proc/1/comm; echo $$; ls /proc | grep -c '^[0-9]'")
      #expect(status.state == .exited(code: 0))
      let lines = output.split(separator: "\n")
      #expect(lines.first == "jobinit")
      #expect(lines.dropFirst().first == "2")
      // init, sh, ls and grep at most.
      #expect(Int(lines.last ?? "") ?? 99 <= 4)
    }
  }

  /// Only the loopback device exists, and our init brought it up.
  @Test(.requires(.cgroups)) func onlyLoopbackAndItIsUp() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run(
        "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/flags")
      #expect(status.state == .exited(code: 0))
      let lines = output.split(separator: "\n").map(String.init)
      #expect(lines.first == "lo")
      #expect(lines.count == 2)
      let flags = Int(lines.last?.dropFirst(2) ?? "", radix: 16) ?? 0
      #expect(flags & Int(IFF_UP) != 0)
    }
  }

  /// A mount made inside the job (as root, to be allowed to mount) stays inside.
  @Test(.requires(.cgroups)) func mountsDoNotLeak() async throws {
    try await withManager(runAsRoot: true) { manager in
      let marker = "jobtest-\(UUID().uuidString.prefix(8))"
      // Not under /tmp: the job has its own.
      let directory = "/var/tmp/\(marker)"
      mkdir(directory, 0o755)
      defer { rmdir(directory) }
      let (status, output) = try await manager.run(
        "sh", "-c",
        "mount -t tmpfs \(marker) \(directory) && grep -c \(marker) /proc/self/mountinfo")
      #expect(status.state == .exited(code: 0))
      #expect(output == "1\n")
      #expect(FileSystem.read("/proc/self/mountinfo")?.contains(marker) == false)
    }
  }

  @Test(.requires(.cgroups)) func stopEndsSleepPromptly() async throws {
    // A grace far beyond how long a stop takes even on a starved host (5.3 s was measured
    // once, load average 15, with a 5 s grace), so that returning before it means something.
    try await withManager(grace: .seconds(30)) { manager in
      let job = try await manager.start(JobSpec(command: "sleep", arguments: ["600"]))
      let clock = ContinuousClock()
      let started = clock.now
      let stopped = try await manager.stop(job.id)
      // Ended by SIGTERM itself, not by the SIGKILL that follows the grace: the state says
      // which signal ended it, and the stop returned before the grace (30 s) ran out: a
      // SIGTERM'd `sleep` ends at once, so the whole grace is the margin for a busy host.
      #expect(stopped.state == .stopped(signal: SIGTERM))
      #expect(clock.now - started < .seconds(30))
      #expect(stopped.endedAt != nil)
      // Idempotent.
      #expect(try await manager.stop(job.id).state == .stopped(signal: SIGTERM))
    }
  }

  /// A job that ignores SIGTERM (and whose children inherit that) is killed with its whole
  /// tree after the grace period; no process and no cgroup is left.
  @Test(.requires(.cgroups)) func stopKillsJobThatIgnoresSIGTERM() async throws {
    let logs = LogRecorder()
    try await withManager(grace: .milliseconds(500), logger: logs.logger) { manager in
      let job = try await manager.start(
        JobSpec(
          command: "sh",
          arguments: ["-c", "trap '' TERM; sleep 600 & sleep 600 & echo ready; wait"]))
      var iterator = try manager.output(job.id).makeAsyncIterator()
      _ = try await iterator.next()
      let pids = manager.cgroup.processes(job.id.description)
      #expect(pids.count == 4)  // init, sh, two sleeps
      let stopped = try await manager.stop(job.id)
      #expect(stopped.state == .stopped(signal: SIGKILL))
      // The kill (a bounded kernel wait on cgroup v1) ran on the reactor thread, not on the
      // cooperative pool thread of `stop`.
      let kills = logs.logged.filter { $0.message == "killing every process of the job" }
      #expect(kills.map(\.thread) == [Reactor.threadName])
      for pid in pids { #expect(kill(pid, 0) == -1 && errno == ESRCH) }
      #expect(
        !FileSystem.exists(
          "/sys/fs/cgroup/memory/\(manager.configuration.cgroupName)/\(job.id)"))
    }
  }

  /// A job that ignores SIGTERM while one of its processes forks and exits at once, over and
  /// over (every PID lives for a moment only, the case a kill loop over `cgroup.procs`
  /// misses), is killed whole after the grace: no process is left in any of its cgroups
  /// (their removal, which fails while one is, went through).
  @Test(.requires(.cgroups)) func stopKillsJobThatKeepsForking() async throws {
    try await withManager(grace: .milliseconds(300)) { manager in
      let job = try await manager.start(
        JobSpec(command: "sh", arguments: ["-c", Self.forkingForever]))
      var iterator = try manager.output(job.id).makeAsyncIterator()
      _ = try await iterator.next()
      let stopped = try await manager.stop(job.id)
      #expect(stopped.state == .stopped(signal: SIGKILL))
      #expect(Self.leftCgroups(manager.cgroup, job.id).isEmpty)
    }
  }

  /// `sh` that ignores SIGTERM, starts a chain of processes each of which forks the next and
  /// exits, says "ready" and sleeps.
  static let forkingForever =
    "trap '' TERM; hop() { hop & }; hop; echo ready; while :; do sleep 1; done"

  /// The job's cgroup directories that still exist (v1: one per hierarchy).
  static func leftCgroups(_ cgroup: any CgroupDriver, _ id: JobID) -> [String] {
    let directories: [String]
    switch cgroup {
    case let v1 as CgroupV1:
      directories = CgroupV1.controllers.map { "\(v1.root)/\($0)/\(v1.parent)/\(id)" }
    case let v2 as CgroupV2: directories = ["\(v2.root)/\(v2.parent)/\(id)"]
    default: directories = []
    }
    return directories.filter { FileSystem.exists($0) }
  }

  /// Orphans are re-parented to our init, which reaps them: no zombie stays in the job.
  @Test(.requires(.cgroups)) func orphansAreReaped() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run(
        "sh", "-c",
        "(sleep 0.1 &); (sleep 0.1 &); sleep 0.5; cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z"
      )
      #expect(status.state == .exited(code: 1))  // grep -c found nothing
      #expect(output == "0\n")
    }
  }

  /// A new manager cleans up after a crashed one: job cgroups it finds under its cgroup name
  /// are killed (with every process in them) and removed.
  @Test(.requires(.cgroups)) func staleJobCgroupsAreRemovedAtStartUp() async throws {
    try await withManager { crashed in
      let job = try await crashed.start(JobSpec(command: "sleep", arguments: ["600"]))
      let pids = crashed.cgroup.processes(job.id.description)
      #expect(pids.count == 2)
      // The "restarted" manager shares the crashed one's data directory and cgroup name, and
      // finds them unlocked, as the kernel leaves them when a worker dies.
      crashed.releaseLocksAsIfCrashed()
      let restarted = try await managerOnceUnlocked(crashed.configuration)
      #expect(
        !FileSystem.exists(
          "/sys/fs/cgroup/memory/\(crashed.configuration.cgroupName)/\(job.id)"))
      // The killed init stays a zombie until its parent (here still alive) reaps it.
      try await crashed.job(job.id)?.waitForEnd()
      for pid in pids { #expect(kill(pid, 0) == -1 && errno == ESRCH) }
      #expect(try crashed.status(job.id).state == .signaled(signal: SIGKILL))
      await restarted.shutdown()
    }
  }

  /// The same for a crashed worker's job whose processes keep forking: the next manager has
  /// no pidfd of it, and kills it through the PIDs its cgroup lists (the init among them).
  @Test(.requires(.cgroups)) func staleForkingJobIsKilledAtStartUp() async throws {
    try await withManager { crashed in
      let job = try await crashed.start(
        JobSpec(command: "sh", arguments: ["-c", Self.forkingForever]))
      var iterator = try crashed.output(job.id).makeAsyncIterator()
      _ = try await iterator.next()
      crashed.releaseLocksAsIfCrashed()
      let restarted = try await managerOnceUnlocked(crashed.configuration)
      #expect(Self.leftCgroups(crashed.cgroup, job.id).isEmpty)
      try await crashed.job(job.id)?.waitForEnd()
      #expect(try crashed.status(job.id).state == .signaled(signal: SIGKILL))
      await restarted.shutdown()
    }
  }
}
