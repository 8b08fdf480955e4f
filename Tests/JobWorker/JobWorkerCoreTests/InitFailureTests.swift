import CJobInit
import Foundation
import Glibc
import TestSupport
import Testing

@testable import JobWorkerCore

/// Failures of the job's init before the program runs arrive as start errors that name the
/// step, never as a bare exit code of the init.
@Suite("Job init failures")
struct InitFailureTests {
  /// The worker gives up between launch and release (as `commit` does when the release write
  /// fails): the init reports it instead of exiting with code 125, and nothing is left.
  @Test func abandonedReleaseIsAStartError() async throws {
    try await withManager { manager in
      let prepared = try manager.prepare(JobSpec(command: "true"))
      let launched = try manager.launch(prepared)
      close(launched.process.release)
      let result = await launched.job.startResult()
      await manager.finishFailedStart(launched)
      guard case .failure(let error) = result else {
        Issue.record("the start succeeded without a release")
        return
      }
      #expect(error.code == .failedToStart)
      #expect(
        error.message == "waiting for the worker to release the job's init: Operation canceled")
      #expect(!FileSystem.exists(prepared.directory))
      #expect(!FileSystem.exists(manager.cgroup.lockPath + "/" + prepared.id.description))
    }
  }

  /// A descriptor the init cannot move into place: reported as the STDIO step instead of an
  /// exit with code 126. The job is built by hand, as no real launch can get there.
  @Test(.requires(.root), .requires(.product("jobinit")))
  func descriptorFailureIsReported() throws {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    // Not open (descriptors are allocated lowest first, so not by a test running beside this
    // one either), and low enough that the status pipe can still be lifted above it.
    let notOpen = Int32(min(limit.rlim_cur, 1 << 20)) - 2
    #expect(fcntl(notOpen, F_GETFD) == -1)
    var status: [Int32] = [-1, -1]
    var release: [Int32] = [-1, -1]
    try #require(cjobinit_pipe(&status) == 0 && cjobinit_pipe(&release) == 0)
    let initExecutable = try InitExecutable(path: builtProduct("jobinit"))
    let values: [String] = ["/bin/true", "/", "job-test", "size=1048576,mode=1777"]
    let strings = values.map { strdup($0) }
    defer { for string in strings { free(string) } }
    var argv: [UnsafeMutablePointer<CChar>?] = [strings[0], nil]
    var envp: [UnsafeMutablePointer<CChar>?] = [nil]
    var pidfd: Int32 = -1
    let pid = argv.withUnsafeMutableBufferPointer { argv in
      envp.withUnsafeMutableBufferPointer { envp in
        // The program's one candidate path is its argv[0].
        var job = cjobinit_job(
          candidates: argv.baseAddress, argv: argv.baseAddress, envp: envp.baseAddress,
          working_directory: strings[1], hostname: strings[2], scratch_options: strings[3],
          uid: 65534, gid: 65534)
        var descriptors = cjobinit_descriptors(
          init_executable: initExecutable.descriptor, output: notOpen, release: release[0],
          status: status[1])
        return cjobinit_spawn(&job, &descriptors, &pidfd)
      }
    }
    close(status[1])
    close(release[0])
    defer {
      close(status[0])
      close(release[1])
    }
    guard pid > 0 else {
      Issue.record("clone failed: \(errnoText(-pid))")
      return
    }
    // Blocking: the init reports and exits, and its exit closes its copy of the pipe.
    expectBadDescriptorFailure(
      status: status[0], pid: pid, pidfd: pidfd, stage: Int32(CJOBINIT_STAGE_STDIO),
      message: "setting up the job's standard descriptors: Bad file descriptor")
  }
}

/// The child joins the job's cgroup itself (cgroup v1 `tasks`, see `CgroupDriver.joinFiles`):
/// a join that fails is reported as its own step, before the release, and the init never runs.
@Suite("Job init cgroup join")
struct InitCgroupJoinTests {
  @Test(.requires(.root), .requires(.product("jobinit")))
  func joinFailureIsReported() throws {
    var status: [Int32] = [-1, -1]
    var release: [Int32] = [-1, -1]
    var output: [Int32] = [-1, -1]
    try #require(
      cjobinit_pipe(&status) == 0 && cjobinit_pipe(&release) == 0 && cjobinit_pipe(&output) == 0)
    // Read-only, so the child's write of "0" fails with EBADF.
    let unwritable = open("/dev/null", O_RDONLY | O_CLOEXEC)
    try #require(unwritable >= 0)
    let initExecutable = try InitExecutable(path: builtProduct("jobinit"))
    let values: [String] = ["/bin/true", "/", "job-test", "size=1048576,mode=1777"]
    let strings = values.map { strdup($0) }
    defer { for string in strings { free(string) } }
    var argv: [UnsafeMutablePointer<CChar>?] = [strings[0], nil]
    var envp: [UnsafeMutablePointer<CChar>?] = [nil]
    var pidfd: Int32 = -1
    let joins: [Int32] = [unwritable]
    let pid = argv.withUnsafeMutableBufferPointer { argv in
      envp.withUnsafeMutableBufferPointer { envp in
        var job = cjobinit_job(
          candidates: argv.baseAddress, argv: argv.baseAddress, envp: envp.baseAddress,
          working_directory: strings[1], hostname: strings[2], scratch_options: strings[3],
          uid: 65534, gid: 65534)
        var descriptors = cjobinit_descriptors(
          init_executable: initExecutable.descriptor, output: output[1], release: release[0],
          status: status[1])
        return cjobinit_spawn_in_cgroup(&job, &descriptors, joins, joins.count, &pidfd)
      }
    }
    close(unwritable)
    close(status[1])
    close(release[0])
    close(output[1])
    defer {
      close(status[0])
      close(release[1])
      close(output[0])
    }
    guard pid > 0 else {
      Issue.record("clone failed: \(errnoText(-pid))")
      return
    }
    // Blocking: the child reports and exits without waiting for its release.
    expectBadDescriptorFailure(
      status: status[0], pid: pid, pidfd: pidfd, stage: Int32(CJOBINIT_STAGE_CGROUP),
      message: "joining the job's cgroup: Bad file descriptor")
  }
}

/// Reads the one report a failing init writes on `status`, reaps the init, and checks that
/// it failed at `stage` with EBADF, and the error the server would show for it.
private func expectBadDescriptorFailure(
  status: Int32, pid: pid_t, pidfd: Int32, stage: Int32, message: String
) {
  var report = cjobinit_report()
  let n = withUnsafeMutableBytes(of: &report) { read(status, $0.baseAddress, $0.count) }
  var initStatus: Int32 = 0
  waitpid(pid, &initStatus, 0)
  close(pidfd)

  #expect(n == MemoryLayout<cjobinit_report>.size)
  #expect(report.kind == Int32(CJOBINIT_REPORT_FAILED))
  #expect(report.stage == stage)
  #expect(report.value == EBADF)
  let error = Job.startError(stage: report.stage, errno: report.value, "/bin/true")
  #expect(error.message == message)
}
