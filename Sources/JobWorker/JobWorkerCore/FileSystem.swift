import Glibc

/// Small, synchronous helpers for the kernel's pseudo files (cgroupfs, procfs, sysfs) and for
/// errno handling. They never block for long: these files answer from kernel memory.
enum FileSystem {
  /// An errno with the call that produced it, e.g. `write /sys/.../pids.max: Invalid argument`.
  struct SystemError: Error, CustomStringConvertible {
    var operation: String
    var errno: Int32
    var description: String { "\(operation): \(String(cString: strerror(errno)))" }
  }

  /// The whole content of a small file, or nil when it cannot be read.
  static func read(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { return n == 0 ? String(decoding: bytes, as: UTF8.self) : nil }
      bytes.append(contentsOf: buffer[0..<n])
    }
  }

  /// Writes `value` with one write(2) call, as cgroup files require.
  static func write(_ path: String, _ value: String) throws(SystemError) {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemError(operation: "open \(path)", errno: errno) }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    guard n == bytes.count else {
      throw SystemError(operation: "write \(value) to \(path)", errno: n < 0 ? errno : EIO)
    }
  }

  /// mkdir that accepts an existing directory.
  static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
    if mkdir(path, mode) != 0 && errno != EEXIST {
      throw SystemError(operation: "mkdir \(path)", errno: errno)
    }
  }

  /// Creates a directory and its missing parents.
  static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SystemError) {
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
      prefix += "/" + component
      try makeDirectory(prefix, mode: mode)
    }
  }

  /// Names in a directory (without `.` and `..`); empty if it cannot be read.
  static func entries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }

  static func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
  }

  static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

  /// `key value` lines (cpu.stat, memory.events, memory.oom_control) as a dictionary.
  static func keyedValues(_ text: String) -> [String: UInt64] {
    var values: [String: UInt64] = [:]
    for line in text.split(separator: "\n") {
      let fields = line.split(separator: " ")
      if fields.count == 2, let value = UInt64(fields[1]) { values[String(fields[0])] = value }
    }
    return values
  }
}
