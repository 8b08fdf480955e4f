import CJobInit
import Glibc

/// Clones a job's init with the C shim: a child of the worker that execs `jobinit` once it is
/// released. Owns the pipes until the init runs: on every failure path it closes what it
/// opened and reaps the child, so a failed launch leaves nothing.
enum Launcher {
  struct Launched {
    var pid: pid_t
    var pidfd: Int32
    /// Read ends (non-blocking) of the output and status pipes.
    var output: Int32
    var status: Int32
    /// The worker's end of the release channel: one byte lets the init go on.
    var release: Int32
    /// Whether the init was created inside `Request.cgroupDirectory` (else the caller moves
    /// it before `release(_:)`, as without one).
    var clonedIntoCgroup = false
  }

  struct Request {
    /// What the child execs.
    var initExecutable: InitExecutable
    var program: ProgramSearch
    var arguments: [String]
    var environment: [String]
    var workingDirectory: String
    var hostname: String
    /// Size of the job's private /tmp and of its /dev/shm (each).
    var scratchBytes: UInt64
    var uid: uid_t
    var gid: gid_t
    /// Files the child writes "0" to before anything else, to join the job's cgroup itself
    /// (`CgroupDriver.joinFiles`); empty: the caller moves it before `release(_:)`.
    var cgroupJoinFiles: [String] = []
    /// A cgroup v2 directory to create the child in (`CgroupDriver.cloneDirectory`); a
    /// kernel without `clone3(CLONE_INTO_CGROUP)` clones as without it.
    var cgroupDirectory: String? = nil
  }

  /// Reserves the low descriptor numbers through which a launch's child shares the worker's
  /// descriptor table and copies only those, so that a start costs the same however many
  /// descriptors the worker holds (`cjobinit_reserve_launch_slots`). Once per process; the
  /// first launch does it otherwise.
  static func reserveSlots() { cjobinit_reserve_launch_slots() }

  /// The placeholder's and the launch slots' descriptor numbers (empty if none are reserved).
  static func slotNumbers() -> [Int32] {
    var numbers = [Int32](repeating: -1, count: 64)
    let count = cjobinit_launch_slots(&numbers, numbers.count)
    return Array(numbers.prefix(count))
  }

  /// Clones the init's child and returns once it has exec'd `jobinit`, which then waits for
  /// `release(_:)`.
  static func spawn(_ request: Request) throws(JobError) -> Launched {
    var output: [Int32] = [-1, -1]
    var status: [Int32] = [-1, -1]
    var release: [Int32] = [-1, -1]
    func closeAll() { for fd in output + status + release where fd >= 0 { close(fd) } }
    let failure = [
      cjobinit_pipe(&output), cjobinit_pipe(&status), cjobinit_release_channel(&release),
    ]
      .first { $0 != 0 }
    if let failure {
      let message = errnoText(-failure)
      closeAll()
      throw JobError(.resourceExhausted, "pipe: \(message)")
    }
    _ = fcntl(output[0], F_SETFL, O_NONBLOCK)
    _ = fcntl(status[0], F_SETFL, O_NONBLOCK)
    // Opened here, written by the child: see `CgroupDriver.joinFiles`.
    var joins: [Int32] = []
    defer { for fd in joins { close(fd) } }
    for path in request.cgroupJoinFiles {
      let fd = open(path, O_WRONLY | O_CLOEXEC)
      guard fd >= 0 else {
        let message = errnoText()
        closeAll()
        throw JobError(.internalError, "open \(path): \(message)")
      }
      joins.append(fd)
    }

    // C strings for the job's encoding, which the C side writes into a memfd for the init
    // before it clones; they are freed right after the call.
    // argv[0] is the command as requested, as a shell (and execvp) would pass it.
    let argv = CStrings([request.program.command] + request.arguments)
    let envp = CStrings(request.environment)
    let candidates = CStrings(request.program.candidates)
    let strings = CStrings([
      request.workingDirectory, request.hostname,
      "size=\(request.scratchBytes),mode=1777",
    ])
    defer {
      argv.free()
      envp.free()
      candidates.free()
      strings.free()
    }
    var job = cjobinit_job(
      candidates: candidates.vector, argv: argv.vector, envp: envp.vector,
      working_directory: strings.pointers[0], hostname: strings.pointers[1],
      scratch_options: strings.pointers[2], uid: request.uid, gid: request.gid)
    var descriptors = cjobinit_descriptors(
      init_executable: request.initExecutable.descriptor, output: output[1],
      release: release[0], status: status[1])
    var pidfd: Int32 = -1
    var pid: pid_t = -ENOSYS
    var clonedIntoCgroup = false
    if let directory = request.cgroupDirectory {
      let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
      guard fd >= 0 else {
        let message = errnoText()
        closeAll()
        throw JobError(.internalError, "open \(directory): \(message)")
      }
      pid = cjobinit_spawn_into_cgroup(&job, &descriptors, fd, &pidfd)
      close(fd)
      clonedIntoCgroup = pid > 0
    }
    // No cgroup to clone into, or a kernel before 5.7 (no clone3, or no CLONE_INTO_CGROUP).
    if pid == -ENOSYS || pid == -E2BIG {
      pid = cjobinit_spawn_in_cgroup(&job, &descriptors, joins, joins.count, &pidfd)
    }
    // The child holds its own copies now; the worker keeps only its ends.
    close(output[1])
    close(status[1])
    close(release[0])
    guard pid > 0 else {
      close(output[0])
      close(status[0])
      close(release[1])
      let exhausted = [EAGAIN, ENOMEM, EMFILE, ENFILE].contains(-pid)
      throw JobError(
        exhausted ? .resourceExhausted : .failedToStart,
        "cloning the job's init: \(errnoText(-pid))")
    }
    return Launched(
      pid: pid, pidfd: pidfd, output: output[0], status: status[0], release: release[1],
      clonedIntoCgroup: clonedIntoCgroup)
  }

  /// Lets the init proceed (it is in its cgroup by now). An init that has already exited
  /// (it failed before its release, e.g. its exec) is no error here: its report on the status
  /// pipe says why, and the caller reads it next.
  static func release(_ launched: Launched) throws(JobError) {
    let result = cjobinit_release(launched.release)
    close(launched.release)
    guard result == 0 || result == -EPIPE || result == -ECONNRESET else {
      throw JobError(.internalError, "cannot release the job init: \(errnoText(-result))")
    }
  }

  /// Abandons a launch before release: closing the release channel makes the init exit at once,
  /// then it is reaped here, a blocking wait of a few milliseconds at most (the manager runs
  /// this on the reactor thread).
  static func abandon(_ launched: Launched) {
    close(launched.release)
    _ = cjobinit_pidfd_signal(launched.pidfd, SIGKILL)
    var status: Int32 = 0
    while waitpid(launched.pid, &status, 0) < 0 && errno == EINTR {}
    close(launched.pidfd)
    close(launched.output)
    close(launched.status)
  }
}

/// NUL-terminated copies of Swift strings in malloc'd memory, with a NULL-terminated vector.
private struct CStrings {
  let pointers: [UnsafeMutablePointer<CChar>?]
  let vector: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>

  init(_ strings: [String]) {
    pointers = strings.map { strdup($0) }
    vector = .allocate(capacity: pointers.count + 1)
    for (index, pointer) in pointers.enumerated() { vector[index] = pointer }
    vector[pointers.count] = nil
  }

  func free() {
    for pointer in pointers { Glibc.free(pointer) }
    vector.deallocate()
  }
}
