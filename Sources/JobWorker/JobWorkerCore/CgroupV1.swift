import Glibc

/// cgroup v1: one hierarchy per controller (`<root>/memory/<parent>/<job>`, ...). Usage comes
/// from cpuacct, memory and blkio; killing uses the freezer so that no process can fork while
/// the others are being killed.
struct CgroupV1: CgroupDriver {
  /// Controllers every job joins. `cpu` and `cpuacct` may be one hierarchy (a symlink); then
  /// the second mkdir or write is a harmless repeat.
  static let controllers = ["cpu", "cpuacct", "memory", "pids", "blkio", "freezer"]

  let root: String
  let parent: String
  var version: String { "v1" }

  private func path(_ controller: String, _ name: String? = nil) -> String {
    let base = "\(root)/\(controller)/\(parent)"
    return name.map { "\(base)/\($0)" } ?? base
  }

  var lockPath: String { path("freezer") }

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
      // quota/period = cores: 100 ms periods, so 1 millicore = 100 µs of quota.
      try FileSystem.write(path("cpu", name) + "/cpu.cfs_period_us", "100000")
      try FileSystem.write(
        path("cpu", name) + "/cpu.cfs_quota_us", String(UInt64(millicores) * 100))
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
    Cgroups.parsePids(FileSystem.read(path("freezer", name) + "/cgroup.procs"))
  }

  func killAll(_ name: String) {
    let state = path("freezer", name) + "/freezer.state"
    // Freeze first so nothing forks between reading the list and killing it; SIGKILL is
    // delivered to frozen tasks once they thaw.
    let frozen = (try? FileSystem.write(state, "FROZEN")) != nil
    if frozen {
      // Bounded wait (at most 0.5 s, typically ~1 ms) for the kernel to finish freezing;
      // blocking is fine on the reactor thread or at start-up, where this runs.
      for _ in 0..<500 {
        let current = FileSystem.read(state) ?? ""
        if !current.hasPrefix("FREEZING") { break }
        usleep(1_000)
      }
    }
    for _ in 0..<3 {
      let pids = processes(name)
      if pids.isEmpty { break }
      for pid in pids { kill(pid, SIGKILL) }
    }
    if frozen { try? FileSystem.write(state, "THAWED") }
  }

  func remove(_ name: String) throws(FileSystem.SystemError) {
    for controller in Self.controllers {
      try Cgroups.removeDirectory(path(controller, name))
    }
  }

  func removeParent() {
    // The freezer's last: it is the locked one, so a manager starting meanwhile finds the
    // lock held until every hierarchy's parent is gone, and then creates them afresh.
    for controller in Self.controllers where controller != "freezer" { rmdir(path(controller)) }
    rmdir(lockPath)
  }
}
