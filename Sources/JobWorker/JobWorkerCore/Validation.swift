import Glibc

/// Checks a `JobSpec` before anything is created, so that bad requests fail with
/// `invalidArgument` and leave nothing behind. Whether the program exists and may be run is
/// not checked here but by the job's init as the job's user (see `ProgramSearch`).
enum Validation {
  static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  /// The smallest memory limit that lets a shell start; below it jobs die at once.
  static let minimumMemory: UInt64 = 4 << 20
  /// The kernel's smallest CFS quota is 1 ms per 100 ms period: 10 millicores.
  static let minimumMillicores: UInt32 = 10

  /// Fills defaults into `requested`, checks every value against its bounds and resolves IO
  /// devices to their numbers. Returns the effective limits and what the cgroup must apply.
  static func limits(
    _ requested: ResourceLimits, defaults: ResourceLimits, maximum: ResourceLimits
  ) throws(JobError) -> (ResourceLimits, CgroupLimits) {
    var effective = requested
    effective.cpuMillicores = requested.cpuMillicores ?? defaults.cpuMillicores
    effective.memoryBytes = requested.memoryBytes ?? defaults.memoryBytes
    effective.maxPids = requested.maxPids ?? defaults.maxPids
    if requested.io.isEmpty { effective.io = defaults.io }

    if let cpu = effective.cpuMillicores {
      let cores = UInt32(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
      let limit = maximum.cpuMillicores ?? cores * 1000
      guard cpu >= minimumMillicores && cpu <= limit else {
        throw JobError(
          .invalidArgument, "cpu limit \(cpu) millicores is outside \(minimumMillicores)...\(limit)"
        )
      }
    }
    if let memory = effective.memoryBytes {
      let physical = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
      let limit = maximum.memoryBytes ?? physical
      guard memory >= minimumMemory && memory <= limit else {
        throw JobError(
          .invalidArgument, "memory limit \(memory) bytes is outside \(minimumMemory)...\(limit)")
      }
    }
    if let pids = effective.maxPids {
      let limit = maximum.maxPids ?? 4_194_304
      guard pids >= 1 && pids <= limit else {
        throw JobError(.invalidArgument, "pids limit \(pids) is outside 1...\(limit)")
      }
    }
    var devices: [CgroupLimits.Device] = []
    for io in effective.io {
      devices.append(try device(io))
    }
    guard Set(devices.map { "\($0.major):\($0.minor)" }).count == devices.count else {
      throw JobError(.invalidArgument, "more than one IO limit for the same device")
    }
    let cgroup = CgroupLimits(
      cpuMillicores: effective.cpuMillicores, memoryBytes: effective.memoryBytes,
      maxPids: effective.maxPids, devices: devices)
    return (effective, cgroup)
  }

  private static func device(_ io: IOLimit) throws(JobError) -> CgroupLimits.Device {
    let values = [io.readBytesPerSecond, io.writeBytesPerSecond, io.readIOPS, io.writeIOPS]
    guard values.contains(where: { $0 != nil }) else {
      throw JobError(.invalidArgument, "IO limit for \(io.device) sets no value")
    }
    guard !values.contains(0) else {
      throw JobError(.invalidArgument, "IO limit for \(io.device) must be positive")
    }
    var st = stat()
    guard stat(io.device, &st) == 0 else {
      throw JobError(.invalidArgument, "IO limit device \(io.device): \(errnoText())")
    }
    guard (st.st_mode & S_IFMT) == S_IFBLK else {
      throw JobError(.invalidArgument, "IO limit device \(io.device) is not a block device")
    }
    // glibc's major()/minor() are macros Swift cannot import; this is their definition.
    let dev = UInt64(st.st_rdev)
    let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff))
    let minor = UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff))
    return CgroupLimits.Device(
      major: major, minor: minor,
      readBytesPerSecond: io.readBytesPerSecond, writeBytesPerSecond: io.writeBytesPerSecond,
      readIOPS: io.readIOPS, writeIOPS: io.writeIOPS)
  }

  /// Rejects what cannot be passed to execve: NUL bytes, environment entries without a name.
  static func strings(_ spec: JobSpec) throws(JobError) {
    for value in [spec.command] + spec.arguments + spec.environment
    where value.utf8.contains(0) {
      throw JobError(.invalidArgument, "command, arguments and environment must not contain NUL")
    }
    for entry in spec.environment {
      guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else {
        throw JobError(.invalidArgument, "environment entry \"\(entry)\" is not NAME=value")
      }
    }
    if let directory = spec.workingDirectory, !directory.hasPrefix("/") {
      throw JobError(.invalidArgument, "working directory \"\(directory)\" is not absolute")
    }
  }

  /// A cgroup name is one directory under each hierarchy: letters, digits, `.`, `_` and `-`,
  /// not `.` or `..`, at most 64 bytes (well under the 255 of a path component).
  static func cgroupName(_ name: String) throws(JobError) {
    let allowed = name.utf8.allSatisfy { byte in
      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a)
        || (byte >= 0x61 && byte <= 0x7a) || byte == 0x2e || byte == 0x5f || byte == 0x2d
    }
    guard !name.isEmpty, name.utf8.count <= 64, allowed, name != ".", name != ".." else {
      throw JobError(
        .invalidArgument,
        "cgroup name \"\(name)\" must be 1 to 64 letters, digits, '.', '_' or '-' "
          + "(and not . or ..)")
    }
  }
}
