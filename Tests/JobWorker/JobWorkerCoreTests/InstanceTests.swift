import Foundation
import Glibc
import Logging
import Testing

@testable import JobWorkerCore

/// Two job workers on one host (issue 11, item 2) and the end of one (item 11).
@Suite("Instances and shutdown")
struct InstanceTests {
  /// A second manager on the same data directory is refused before it touches anything.
  @Test func secondManagerOnTheSameDataDirectoryIsRefused() async throws {
    try await withManager { first in
      let job = try await first.start(JobSpec(command: "sleep", arguments: ["600"]))
      var configuration = first.configuration
      configuration.cgroupName += "-other"
      let error = #expect(throws: JobError.self) {
        try JobManager(configuration: configuration, logger: Logger(label: "test"))
      }
      #expect(error?.code == .inUse)
      #expect(error?.message.contains(first.configuration.dataDirectory) == true)
      #expect(error?.message.contains("(pid \(getpid()))") == true)
      #expect(!FileSystem.exists(first.cgroup.lockPath + "-other"))
      #expect(try first.status(job.id).state == .running)
      #expect(try await first.stop(job.id).state == .stopped(signal: SIGTERM))
    }
  }

  /// A second manager with the same cgroup name (and its own data directory) is refused: it
  /// neither kills the first one's jobs as stale nor takes their parent cgroup away.
  @Test func secondManagerWithTheSameCgroupNameIsRefused() async throws {
    try await withManager { first in
      let job = try await first.start(JobSpec(command: "sleep", arguments: ["600"]))
      let pids = first.cgroup.processes(job.id.description)
      #expect(pids.count == 2)
      var configuration = first.configuration
      configuration.dataDirectory += "-second"
      defer { try? FileManager.default.removeItem(atPath: configuration.dataDirectory) }
      let error = #expect(throws: JobError.self) {
        try JobManager(configuration: configuration, logger: Logger(label: "test"))
      }
      #expect(error?.code == .inUse)
      #expect(error?.message.contains("\"\(configuration.cgroupName)\"") == true)

      #expect(first.cgroup.processes(job.id.description) == pids)
      #expect(try first.status(job.id).state == .running)
      let (status, output) = try await first.run("echo", "still starting jobs")
      #expect(status.state == .exited(code: 0) && output == "still starting jobs\n")

      // The refused manager let go of its data directory: with a name of its own it starts.
      configuration.cgroupName += "-own"
      let own = try JobManager(configuration: configuration, logger: Logger(label: "test"))
      await own.shutdown()
      #expect(try await first.stop(job.id).state == .stopped(signal: SIGTERM))
    }
  }

  /// Shutdown releases both locks: a restart on the same directory and name works at once.
  /// Nothing made ahead for a next job is left: no cgroup (the parent is gone), and no output
  /// file but the job's.
  @Test func restartOnTheSameDirectoryAndName() async throws {
    try await withManager { first in
      let (job, _) = try await first.run("true")
      await first.shutdown()
      #expect(!FileSystem.exists(first.cgroup.lockPath))
      #expect(
        FileSystem.entries(first.configuration.dataDirectory + "/jobs") == [job.id.description])
      let restarted = try await managerOnceUnlocked(first.configuration)
      let (status, output) = try await restarted.run("echo", "again")
      #expect(status.state == .exited(code: 0) && output == "again\n")
      await restarted.shutdown()
    }
  }

  @Test(arguments: [
    "", ".", "..", "a/b", "../jobworker", "name with space", String(repeating: "x", count: 65),
  ])
  func badCgroupNamesAreRejected(name: String) {
    #expect(throws: JobError.self) { try Validation.cgroupName(name) }
  }

  @Test func goodCgroupNames() throws {
    for name in ["jobworker", "jobworker-2", "JW_test.1"] { try Validation.cgroupName(name) }
  }

  /// A server whose shutdown grace ran out cancels the task that runs `shutdown`: the jobs
  /// that ignore SIGTERM are killed at once (the 600 s stop grace is cut short) and their
  /// cgroups are removed before `shutdown` returns, not left for the next start. Several jobs,
  /// because before the fix whether a job's reap still ran before the reactor thread ended
  /// was a race, which the later jobs' kills usually lost.
  /// Before the fix the second `shutdown` (in `withManager`) waited forever for jobs that no
  /// reaper would end any more; the time limit turns that hang into a failure. With the fix the
  /// test takes about a second, so a minute is ample on a loaded machine.
  @Test(.timeLimit(.minutes(1)))
  func cancelledShutdownStillRemovesEveryCgroup() async throws {
    try await withManager(grace: .seconds(600)) { manager in
      var jobs: [JobStatus] = []
      var pids: [pid_t] = []
      for _ in 0..<6 {
        let job = try await manager.start(
          JobSpec(
            command: "sh",
            arguments: ["-c", "trap '' TERM; sleep 600 & sleep 600 & echo ready; wait"]))
        var iterator = try manager.output(job.id).makeAsyncIterator()
        _ = try await iterator.next()  // the trap is in place
        jobs.append(job)
        pids += manager.cgroup.processes(job.id.description)
      }
      #expect(pids.count == 6 * 4)  // init, sh, two sleeps

      await withDiscardingTaskGroup { group in
        group.addTask { await manager.shutdown() }
        group.cancelAll()
      }

      for job in jobs {
        #expect(try manager.status(job.id).state == .stopped(signal: SIGKILL))
        #expect(!FileSystem.exists(manager.cgroup.lockPath + "/" + job.id.description))
      }
      for pid in pids { #expect(kill(pid, 0) == -1 && errno == ESRCH) }
      #expect(!FileSystem.exists(manager.cgroup.lockPath))
    }
  }
}
