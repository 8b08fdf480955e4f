import CJobInit
import Glibc

/// The limits a cgroup driver applies: `ResourceLimits` after validation, defaults filled and
/// device paths resolved to device numbers.
struct CgroupLimits: Hashable, Sendable {
  struct Device: Hashable, Sendable {
    var major: UInt32
    var minor: UInt32
    var readBytesPerSecond: UInt64?
    var writeBytesPerSecond: UInt64?
    var readIOPS: UInt64?
    var writeIOPS: UInt64?
  }

  var cpuMillicores: UInt32?
  var memoryBytes: UInt64?
  var maxPids: UInt32?
  var devices: [Device] = []
}

/// One job's cgroup (v1: one directory per controller hierarchy; v2: one directory), behind
/// the same interface for both versions. All methods are synchronous pseudo-file IO; `killAll`
/// and `remove` may also wait briefly for the kernel, so the manager calls them on the reactor
/// thread (`Reactor.execute`) or in its synchronous `init`, not on the cooperative pool.
protocol CgroupDriver: Sendable {
  /// "v1" or "v2", for logs and status.
  var version: String { get }
  /// The parent cgroup's directory that a manager locks (`InstanceLock`) while it uses the
  /// parent: for v1 the memory hierarchy's, which `removeParent` removes last.
  var lockPath: String { get }
  /// Creates the parent cgroup (enabling controllers on v2); what exists already is kept.
  func createParent() throws(FileSystem.SystemError)
  /// Kills and removes the job cgroups that a crashed previous run left under the parent.
  /// Only for the holder of the parent's lock. Returns the names of the cgroups removed.
  func removeStale() throws(FileSystem.SystemError) -> [String]
  /// Creates the job's cgroup, without limits (`create(_:limits:)` does both).
  func make(_ name: String) throws(FileSystem.SystemError)
  /// Applies a job's limits to its cgroup, before any process is in it.
  func applyLimits(_ name: String, _ limits: CgroupLimits) throws(FileSystem.SystemError)
  /// Files the job's init (still single-threaded, before it runs anything) writes "0" to, to
  /// join the job's cgroup itself: cgroup v1's `tasks`, one per hierarchy. A thread that
  /// moves itself does not make the kernel wait for an RCU grace period, as moving another
  /// process does (8-13 ms on the benchmark host, the largest part of a start). Empty: the
  /// worker moves the init with `add(pid:to:)` (cgroup v2, which moves only whole processes
  /// of a domain cgroup).
  func joinFiles(_ name: String) -> [String]
  /// The job's cgroup directory, for a clone straight into it (`clone3(CLONE_INTO_CGROUP)`,
  /// cgroup v2 only: the init never runs outside it and nobody moves it); nil: not possible.
  func cloneDirectory(_ name: String) -> String?
  /// Moves a process into the job's cgroup.
  func add(pid: pid_t, to name: String) throws(FileSystem.SystemError)
  /// Usage so far; fields the kernel does not offer read as 0.
  func usage(_ name: String) -> ResourceUsage
  /// How many times the OOM killer killed a process of the cgroup.
  func oomKills(_ name: String) -> UInt64
  /// How many CPU periods the cgroup was throttled in (nil if unknown).
  func throttledPeriods(_ name: String) -> UInt64?
  /// PIDs in the cgroup.
  func processes(_ name: String) -> [pid_t]
  /// SIGKILLs every process of the cgroup such that none of the job's can escape by forking
  /// (v2: `cgroup.kill`; v1 and older v2 kernels: `Cgroups.killMembers`). Returns before the
  /// processes are gone; `remove` waits for that.
  func killAll(_ name: String)
  /// Removes the job's cgroup; it must hold no process any more.
  func remove(_ name: String) throws(FileSystem.SystemError)
  /// Removes the parent cgroup if it is empty (at shutdown, by the holder of its lock).
  func removeParent()
}

extension CgroupDriver {
  /// Creates the job's cgroup and applies its limits.
  func create(_ name: String, limits: CgroupLimits) throws(FileSystem.SystemError) {
    try make(name)
    try applyLimits(name, limits)
  }
}

enum Cgroups {
  /// Picks the driver for this host: cgroup v2 when `root` itself is a cgroup2 mount
  /// (`cgroup.controllers` at the top), else v1 with its per-controller hierarchies.
  static func detect(root: String?, parent: String) throws(JobError) -> any CgroupDriver {
    let root = root ?? "/sys/fs/cgroup"
    if FileSystem.exists(root + "/cgroup.controllers") {
      return CgroupV2(root: root, parent: parent)
    }
    let missing = CgroupV1.controllers.filter { !FileSystem.isDirectory(root + "/" + $0) }
    if missing.isEmpty {
      return CgroupV1(root: root, parent: parent)
    }
    throw JobError(
      .unavailable,
      "no usable cgroups under \(root): not cgroup v2, and cgroup v1 controllers missing: "
        + missing.joined(separator: ", "))
  }

  /// Every process of a cgroup gone: rmdir answers EBUSY until the last task has been
  /// released, which can trail the exit of the processes by a moment.
  static func removeDirectory(_ path: String) throws(FileSystem.SystemError) {
    for attempt in 0..<100 {
      if rmdir(path) == 0 || errno == ENOENT { return }
      guard errno == EBUSY, attempt < 99 else { break }
      // Bounded (at most 0.2 s), and blocking is fine: this runs on the reactor thread or in
      // the manager's synchronous start-up, not on the cooperative pool (see CgroupDriver).
      usleep(2_000)
    }
    throw FileSystem.SystemError(operation: "rmdir \(path)", errno: errno)
  }

  /// SIGKILLs every process that `members` (a cgroup's `cgroup.procs`) lists, for a few
  /// rounds or until it lists none. Race-free for the processes of a job without a freezer:
  /// the job's init is among those listed, and once it is killed the kernel kills every other
  /// process of its PID namespace and lets none fork into it any more, so no process of the
  /// job outruns this by forking. (One that joined the cgroup from outside the namespace,
  /// which takes root on the host, gets its own SIGKILL in the round that lists it.) Each PID
  /// is opened as a pidfd and signalled only if it is still listed after that, so a PID that
  /// was reused meanwhile by a process outside the cgroup is never signalled.
  static func killMembers(_ members: () -> [pid_t]) {
    for _ in 0..<3 {
      let listed = members()
      if listed.isEmpty { return }
      let opened = listed.map { (pid: $0, pidfd: cjobinit_pidfd_open($0)) }
      let stillListed = Set(members())
      for (pid, pidfd) in opened where pidfd >= 0 {
        if stillListed.contains(pid) { _ = cjobinit_pidfd_signal(pidfd, SIGKILL) }
        close(pidfd)
      }
    }
  }

  static func parsePids(_ text: String?) -> [pid_t] {
    (text ?? "").split(separator: "\n").compactMap { pid_t($0) }
  }
}
