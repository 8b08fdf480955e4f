import Glibc

/// cgroup v1: one hierarchy per controller (`<root>/memory/<parent>/<job>`, ...). Usage comes
/// from cpuacct, memory and blkio. No freezer: every process of a job is in the PID namespace
/// of its init, and SIGKILL to that init kills them all (`Cgroups.killMembers`).
struct CgroupV1: CgroupDriver {
  /// Controllers every job joins. `cpu` and `cpuacct` may be one hierarchy (a symlink); then
  /// the second mkdir or write is a harmless repeat. Both are needed where they are separate:
  /// `cpu` for the quota, `cpuacct` for the usage of a running job (`cpu.stat` of v1 has no
  /// usage). The memory hierarchy comes first and goes last: it is the one the manager locks
  /// (`lockPath`) and whose `cgroup.procs` lists a job's processes.
  static let controllers = ["memory", "cpu", "cpuacct", "pids", "blkio"]

  let root: String
  let parent: String
  var version: String { "v1" }

  private func path(_ controller: String, _ name: String? = nil) -> String {
    let base = "\(root)/\(controller)/\(parent)"
    return name.map { "\(base)/\($0)" } ?? base
  }

  var lockPath: String { path("memory") }

  func createParent() throws(FileSystem.SystemError) {
    for controller in Self.controllers { try FileSystem.makeDirectory(path(controller)) }
  }

  func removeStale() throws(FileSystem.SystemError) -> [String] {
    var stale = Set<String>()
    for controller in Self.controllers {
      for name in FileSystem.entries(path(controller))
      where FileSystem.isDirectory(
        path(controller, name))
      {
        stale.insert(name)
      }
    }
    for name in stale {
      killAll(name)
      try remove(name)
    }
    return stale.sorted()
  }

  func make(_ name: String) throws(FileSystem.SystemError) {
    for controller in Self.controllers { try FileSystem.makeDirectory(path(controller, name)) }
  }

  func applyLimits(_ name: String, _ limits: CgroupLimits) throws(FileSystem.SystemError) {
    if let millicores = limits.cpuMillicores {
      // quota/period = cores: 100 ms periods, so 1 millicore = 100 µs of quota. The period
      // is written only if it is not 100 ms already (the kernel's default for a new cgroup):
      // each write checks the bandwidth of every cgroup of the cpu hierarchy (the kernel's
      // `tg_set_bandwidth` walks them all), so it costs more the more jobs are running.
      let cpu = path("cpu", name)
      let period = FileSystem.read(cpu + "/cpu.cfs_period_us")?
        .trimmingCharacters(in: .whitespacesAndNewlines)
      if period != "100000" { try FileSystem.write(cpu + "/cpu.cfs_period_us", "100000") }
      try FileSystem.write(cpu + "/cpu.cfs_quota_us", String(UInt64(millicores) * 100))
    }
    if let memory = limits.memoryBytes {
      let dir = path("memory", name)
      try FileSystem.write(dir + "/memory.limit_in_bytes", String(memory))
      // memory+swap equal to memory: no swap. Absent when the kernel has no swap accounting.
      if FileSystem.exists(dir + "/memory.memsw.limit_in_bytes") {
        try FileSystem.write(dir + "/memory.memsw.limit_in_bytes", String(memory))
      }
    }
    if let pids = limits.maxPids {
      try FileSystem.write(path("pids", name) + "/pids.max", String(pids))
    }
    let blkio = path("blkio", name)
    for device in limits.devices {
      let settings: [(String, UInt64?)] = [
        ("read_bps_device", device.readBytesPerSecond),
        ("write_bps_device", device.writeBytesPerSecond),
        ("read_iops_device", device.readIOPS), ("write_iops_device", device.writeIOPS),
      ]
      for (file, value) in settings {
        guard let value else { continue }
        try FileSystem.write(
          "\(blkio)/blkio.throttle.\(file)", "\(device.major):\(device.minor) \(value)")
      }
    }
  }

  /// None: `clone3(CLONE_INTO_CGROUP)` takes a cgroup v2 directory only.
  func cloneDirectory(_ name: String) -> String? { nil }

  func joinFiles(_ name: String) -> [String] {
    Self.controllers.map { path($0, name) + "/tasks" }
  }

  func add(pid: pid_t, to name: String) throws(FileSystem.SystemError) {
    for controller in Self.controllers {
      try FileSystem.write(path(controller, name) + "/cgroup.procs", String(pid))
    }
  }

  func usage(_ name: String) -> ResourceUsage {
    var usage = ResourceUsage()
    if let text = FileSystem.read(path("cpuacct", name) + "/cpuacct.usage"),
      let nanos = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    {
      usage.cpuMicros = nanos / 1000
    }
    if let text = FileSystem.read(path("memory", name) + "/memory.max_usage_in_bytes"),
      let peak = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    {
      usage.memoryPeakBytes = peak
    }
    // Lines: "254:0 Read 4096", "254:0 Write 0", ..., "Total 4096".
    let io = FileSystem.read(path("blkio", name) + "/blkio.throttle.io_service_bytes") ?? ""
    for line in io.split(separator: "\n") {
      let fields = line.split(separator: " ")
      guard fields.count == 3, let value = UInt64(fields[2]) else { continue }
      if fields[1] == "Read" { usage.ioReadBytes += value }
      if fields[1] == "Write" { usage.ioWriteBytes += value }
    }
    return usage
  }

  func oomKills(_ name: String) -> UInt64 {
    let text = FileSystem.read(path("memory", name) + "/memory.oom_control") ?? ""
    return FileSystem.keyedValues(text)["oom_kill"] ?? 0
  }

  func throttledPeriods(_ name: String) -> UInt64? {
    FileSystem.read(path("cpu", name) + "/cpu.stat").flatMap {
      FileSystem.keyedValues($0)["nr_throttled"]
    }
  }

  func processes(_ name: String) -> [pid_t] {
    Cgroups.parsePids(FileSystem.read(path("memory", name) + "/cgroup.procs"))
  }

  func killAll(_ name: String) {
    Cgroups.killMembers { processes(name) }
  }

  func remove(_ name: String) throws(FileSystem.SystemError) {
    for controller in Self.controllers {
      try Cgroups.removeDirectory(path(controller, name))
    }
  }

  func removeParent() {
    // The memory hierarchy's last: it is the locked one, so a manager starting meanwhile finds
    // the lock held until every hierarchy's parent is gone, and then creates them afresh.
    for controller in Self.controllers where controller != "memory" { rmdir(path(controller)) }
    rmdir(lockPath)
  }
}
