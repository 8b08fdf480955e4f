import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

@Suite("Process execution")
struct ExecutionTests {
  @Test(.requires(.cgroups)) func echoOutputAndExitCode() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run("echo", "hello", "world")
      #expect(output == "hello world\n")
      #expect(status.state == .exited(code: 0))
      #expect(status.command == "/usr/bin/echo" || status.command == "/bin/echo")
      #expect(status.endedAt != nil)
      #expect(status.outputBytes == 12)
      #expect(status.limits.memoryBytes == 512 << 20)
    }
  }

  @Test(.requires(.cgroups)) func exitCodeAndInterleavedStreams() async throws {
    try await withManager { manager in
      let (status, output) = try await manager.run(
        "sh", "-c", "echo out; echo err >&2; echo out2; exit 3")
      #expect(status.state == .exited(code: 3))
      #expect(output == "out\nerr\nout2\n")
    }
  }

  /// The per-user cap's count (read on every start, from memory rather than the cgroups):
  /// the owner's running jobs only, not ended ones or other owners'.
  @Test(.requires(.cgroups)) func runningJobCountPerOwner() async throws {
    try await withManager { manager in
      let first = try await manager.start(JobSpec(command: "sleep", arguments: ["60"], owner: "a"))
      _ = try await manager.start(JobSpec(command: "sleep", arguments: ["60"], owner: "b"))
      let ended = try await manager.start(JobSpec(command: "true", owner: "a"))
      #expect(await eventually { (try? manager.status(ended.id).state.isFinal) == true })
      #expect(manager.runningJobCount(owner: "a") == 1)
      #expect(manager.runningJobCount(owner: "b") == 1)
      #expect(manager.runningJobCount(owner: "c") == 0)
      _ = try await manager.stop(first.id)
      #expect(manager.runningJobCount(owner: "a") == 0)
    }
  }

  @Test(.requires(.cgroups)) func killedBySignal() async throws {
    try await withManager { manager in
      let (status, _) = try await manager.run("sh", "-c", "kill -KILL $$")
      #expect(status.state == .signaled(signal: SIGKILL))
    }
  }

  @Test(.requires(.cgroups)) func environmentDirectoryUserAndHostname() async throws {
    try await withManager { manager in
      let job = try await manager.start(
        JobSpec(
          command: "sh", arguments: ["-c", "echo $FOO; pwd; id -u; id -g; hostname; echo $PATH"],
          environment: ["FOO=bar baz"], workingDirectory: "/tmp"))
      let output = String(decoding: try await manager.collect(job.id), as: UTF8.self)
      let lines = output.split(separator: "\n").map(String.init)
      #expect(lines.count == 6)
      #expect(Array(lines.prefix(4)) == ["bar baz", "/tmp", "65534", "65534"])
      #expect(lines.dropFirst(4).first == "job-" + job.id.description.prefix(8))
      #expect(lines.last == Validation.defaultPath)
    }
  }

  /// Many jobs started, streamed and reaped at once: each gets its own output and status.
  @Test(.requires(.cgroups)) func manyConcurrentJobs() async throws {
    try await withManager { manager in
      let results = try await withThrowingTaskGroup(of: (Int, JobStatus, String).self) { group in
        for index in 0..<40 {
          group.addTask {
            let (status, output) = try await manager.run("sh", "-c", "echo job \(index)")
            return (index, status, output)
          }
        }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      #expect(results.count == 40)
      for (index, status, output) in results {
        #expect(status.state == .exited(code: 0))
        #expect(output == "job \(index)\n")
      }
      #expect(Set(manager.list().map(\.id)).count == 40)
    }
  }

  @Test(.requires(.cgroups)) func missingProgramFailsAtStart() async throws {
    try await withManager { manager in
      for command in ["/nonexistent/program", "no-such-program-anywhere", "/etc/hostname"] {
        let error = await #expect(throws: JobError.self) {
          try await manager.start(JobSpec(command: command))
        }
        #expect(error?.code == .failedToStart, "\(command): \(String(describing: error))")
      }
      #expect(manager.list().isEmpty)
    }
  }

  /// A program root can run but the job's user cannot: only execve itself knows, and its
  /// error comes back through the close-on-exec pipe as an error of `start`.
  @Test(.requires(.cgroups)) func execveErrorIsReportedByStart() async throws {
    try await withManager { manager in
      try await withHostDirectory { directory in
        let program = directory + "/private"
        _ = FileManager.default.createFile(
          atPath: program, contents: Data("#!/bin/sh\necho hi\n".utf8),
          attributes: [.posixPermissions: 0o700])
        let error = await #expect(throws: JobError.self) {
          try await manager.start(JobSpec(command: program))
        }
        #expect(error?.code == .failedToStart)
        #expect(error?.message == "execve \(program): Permission denied")
      }

      let badDirectory = await #expect(throws: JobError.self) {
        try await manager.start(JobSpec(command: "true", workingDirectory: "/root/nowhere"))
      }
      #expect(badDirectory?.code == .failedToStart)
      #expect(badDirectory?.message.hasPrefix("chdir") == true)
      #expect(manager.list().isEmpty)
    }
  }

  /// The command is looked up as the job's user, never as root: under a directory only root
  /// may enter, a program that exists, one that does not and a directory all give the same
  /// answer, so a job cannot probe what root sees (issue 11, item 3). Before, the worker
  /// checked as root: "No such file or directory", "not a regular file" and, for the one
  /// that exists, execve's "Permission denied".
  @Test(.requires(.cgroups)) func commandIsLookedUpAsTheJobsUser() async throws {
    try await withManager { manager in
      try await withHostDirectory(mode: 0o700) { secret in
        _ = FileManager.default.createFile(
          atPath: secret + "/exists", contents: Data("#!/bin/sh\necho hi\n".utf8),
          attributes: [.posixPermissions: 0o755])
        mkdir(secret + "/directory", 0o755)
        func startError(_ spec: JobSpec) async -> JobError? {
          await #expect(throws: JobError.self) { try await manager.start(spec) }
        }
        var answers: [String: String] = [:]
        for name in ["exists", "missing", "directory"] {
          let absolute = await startError(JobSpec(command: "\(secret)/\(name)"))
          let searched = await startError(JobSpec(command: name, environment: ["PATH=" + secret]))
          for error in [absolute, searched] {
            #expect(error?.code == .failedToStart)
            answers[name, default: ""] +=
              (error?.message ?? "no error").replacingOccurrences(of: name, with: "NAME") + "\n"
          }
        }
        let expected = "execve \(secret)/NAME: Permission denied\n"
        #expect(answers["exists"] == expected + expected)
        #expect(answers["missing"] == answers["exists"])
        #expect(answers["directory"] == answers["exists"])
        #expect(manager.list().isEmpty)
      }
      // What the job's user can see is still told apart.
      let missing = await #expect(throws: JobError.self) {
        try await manager.start(JobSpec(command: "/nonexistent/program"))
      }
      #expect(missing?.message == "execve /nonexistent/program: No such file or directory")
      let notInPath = await #expect(throws: JobError.self) {
        try await manager.start(JobSpec(command: "no-such-program", environment: ["PATH=/bin"]))
      }
      #expect(notInPath?.message == "executable \"no-such-program\" not found in PATH /bin")
      // A bare name runs from the first PATH entry that has it, and the status names it.
      let found = try await manager.start(
        JobSpec(command: "true", environment: ["PATH=/nonexistent:/usr/bin:/bin"]))
      #expect(found.command == "/usr/bin/true")
    }
  }

  @Test(
    .requires(.cgroups),
    arguments: [
      ResourceLimits(cpuMillicores: 0), ResourceLimits(cpuMillicores: 1_000_000),
      ResourceLimits(memoryBytes: 1024), ResourceLimits(maxPids: 0),
      ResourceLimits(io: [IOLimit(device: "/dev/null", readBytesPerSecond: 1)]),
      ResourceLimits(io: [IOLimit(device: "/dev/no-such-disk", readBytesPerSecond: 1)]),
      ResourceLimits(io: [IOLimit(device: "/dev/null")]),
    ])
  func invalidLimits(_ limits: ResourceLimits) async throws {
    try await withManager { manager in
      let error = await #expect(throws: JobError.self) {
        try await manager.start(JobSpec(command: "true", limits: limits))
      }
      #expect(error?.code == .invalidArgument)
    }
  }

  @Test(.requires(.cgroups)) func invalidRequests() async throws {
    try await withManager { manager in
      for spec in [
        JobSpec(command: "true", environment: ["NOEQUALS"]),
        JobSpec(command: "true", workingDirectory: "relative"),
        JobSpec(command: "bin/true"), JobSpec(command: ""),
        JobSpec(command: "true", arguments: ["a\0b"]),
      ] {
        let error = await #expect(throws: JobError.self) { try await manager.start(spec) }
        #expect(error?.code == .invalidArgument)
      }
    }
  }

  @Test(.requires(.cgroups)) func unknownJob() async throws {
    try await withManager { manager in
      let id = try #require(JobID(UUID().uuidString))
      #expect(throws: JobError.self) { try manager.status(id) }
      #expect(throws: JobError.self) { try manager.output(id) }
      let error = await #expect(throws: JobError.self) { try await manager.stop(id) }
      #expect(error?.code == .notFound)
      #expect(JobID("not-a-uuid") == nil)
    }
  }
}
