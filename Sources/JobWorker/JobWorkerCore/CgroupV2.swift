import Glibc

/// cgroup v2: one unified directory per job under `<root>/<parent>`. Controllers are enabled
/// for the parent's children through `cgroup.subtree_control`; `cgroup.kill` kills the tree.
struct CgroupV2: CgroupDriver {
  static let controllers = ["cpu", "memory", "io", "pids"]

  let root: String
  let parent: String
  var version: String { "v2" }

  private var parentPath: String { "\(root)/\(parent)" }
  private func path(_ name: String) -> String { "\(parentPath)/\(name)" }

  var lockPath: String { parentPath }

  func createParent() throws(FileSystem.SystemError) {
    let enable = Self.controllers.map { "+" + $0 }.joined(separator: " ")
    // Both levels must delegate the controllers: the root to our parent, the parent to jobs.
    // (The parent itself holds no process, which v2's "no internal processes" rule needs.)
    try FileSystem.write(root + "/cgroup.subtree_control", enable)
    try FileSystem.makeDirectory(parentPath)
    try FileSystem.write(parentPath + "/cgroup.subtree_control", enable)
  }

  func removeStale() throws(FileSystem.SystemError) -> [String] {
    let stale = FileSystem.entries(parentPath).filter { FileSystem.isDirectory(path($0)) }
    for name in stale {
      killAll(name)
      try remove(name)
    }
    return stale.sorted()
  }

  func make(_ name: String) throws(FileSystem.SystemError) {
    try FileSystem.makeDirectory(path(name))
  }

  func applyLimits(_ name: String, _ limits: CgroupLimits) throws(FileSystem.SystemError) {
    let dir = path(name)
    if let millicores = limits.cpuMillicores {
      try FileSystem.write(dir + "/cpu.max", "\(UInt64(millicores) * 100) 100000")
    }
    if let memory = limits.memoryBytes {
      try FileSystem.write(dir + "/memory.max", String(memory))
      if FileSystem.exists(dir + "/memory.swap.max") {
        try FileSystem.write(dir + "/memory.swap.max", "0")
      }
    }
    if let pids = limits.maxPids {
      try FileSystem.write(dir + "/pids.max", String(pids))
    }
    for device in limits.devices {
      func value(_ v: UInt64?) -> String { v.map(String.init) ?? "max" }
      try FileSystem.write(
        dir + "/io.max",
        "\(device.major):\(device.minor) rbps=\(value(device.readBytesPerSecond)) "
          + "wbps=\(value(device.writeBytesPerSecond)) riops=\(value(device.readIOPS)) "
          + "wiops=\(value(device.writeIOPS))")
    }
  }

  /// None: cgroup.threads moves single threads only within threaded subtrees, and a
  /// process moved through cgroup.procs takes the global lock whoever writes it.
  func joinFiles(_ name: String) -> [String] { [] }

  /// The job's directory: the init is cloned into it (`Launcher.Request.cgroupDirectory`),
  /// and moved with `add(pid:to:)` only on a kernel older than 5.7.
  func cloneDirectory(_ name: String) -> String? { path(name) }

  func add(pid: pid_t, to name: String) throws(FileSystem.SystemError) {
    try FileSystem.write(path(name) + "/cgroup.procs", String(pid))
  }

  func usage(_ name: String) -> ResourceUsage {
    let dir = path(name)
    var usage = ResourceUsage()
    usage.cpuMicros =
      FileSystem.read(dir + "/cpu.stat").flatMap { FileSystem.keyedValues($0)["usage_usec"] } ?? 0
    // memory.peak exists since Linux 5.19.
    if let text = FileSystem.read(dir + "/memory.peak"),
      let peak = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    {
      usage.memoryPeakBytes = peak
    }
    // Lines: "254:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0".
    for line in (FileSystem.read(dir + "/io.stat") ?? "").split(separator: "\n") {
      for field in line.split(separator: " ").dropFirst() {
        let pair = field.split(separator: "=")
        guard pair.count == 2, let value = UInt64(pair[1]) else { continue }
        if pair[0] == "rbytes" { usage.ioReadBytes += value }
        if pair[0] == "wbytes" { usage.ioWriteBytes += value }
      }
    }
    return usage
  }

  func oomKills(_ name: String) -> UInt64 {
    FileSystem.read(path(name) + "/memory.events").flatMap {
      FileSystem.keyedValues($0)["oom_kill"]
    } ?? 0
  }

  func throttledPeriods(_ name: String) -> UInt64? {
    FileSystem.read(path(name) + "/cpu.stat").flatMap {
      FileSystem.keyedValues($0)["nr_throttled"]
    }
  }

  func processes(_ name: String) -> [pid_t] {
    Cgroups.parsePids(FileSystem.read(path(name) + "/cgroup.procs"))
  }

  func killAll(_ name: String) {
    // cgroup.kill (Linux 5.14+) kills the whole tree atomically; fall back to a kill loop.
    if (try? FileSystem.write(path(name) + "/cgroup.kill", "1")) != nil { return }
    Cgroups.killMembers { processes(name) }
  }

  func remove(_ name: String) throws(FileSystem.SystemError) {
    try Cgroups.removeDirectory(path(name))
  }

  func removeParent() { rmdir(parentPath) }
}
