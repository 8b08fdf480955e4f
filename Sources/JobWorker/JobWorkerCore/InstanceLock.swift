import Glibc

/// An exclusive `flock` on a file or a directory, held from `acquire` until `release()`: how a
/// job worker tells that another live one uses the same data directory or cgroup name. The
/// kernel drops the lock when its holder dies, so a crashed worker never leaves it behind and
/// the next one starts (and cleans up after it) without manual steps.
struct InstanceLock: Sendable {
  enum Failure: Error {
    /// Another open file description holds the lock: in practice another live job worker.
    /// `holder` is the PID it wrote into the lock file, when there is one.
    case held(holder: pid_t?)
    case system(FileSystem.SystemError)
  }

  private let fd: Int32

  /// Takes the lock without waiting. A file is created if missing and gets the holder's PID
  /// (for the error message of the next one); a directory must exist.
  ///
  /// Whoever removes the path (shutdown removes the parent cgroup) does so while holding the
  /// lock, so a lock taken on a descriptor whose path was removed meanwhile would guard
  /// nothing: then the path is opened and locked again.
  static func acquire(path: String, directory: Bool) throws(Failure) -> InstanceLock {
    let flags = O_CLOEXEC | O_NOFOLLOW | (directory ? O_RDONLY | O_DIRECTORY : O_RDWR | O_CREAT)
    // Bounded: each retry means someone removed the path between our open and our lock,
    // which a second time in a row means something other than a job worker is at work.
    for _ in 0..<3 {
      let fd = open(path, flags, 0o600)
      guard fd >= 0 else {
        throw .system(FileSystem.SystemError(operation: "open \(path)", errno: errno))
      }
      if flock(fd, LOCK_EX | LOCK_NB) != 0 {
        let error = errno
        let holder = directory ? nil : readPID(fd)
        close(fd)
        if error == EWOULDBLOCK { throw .held(holder: holder) }
        throw .system(FileSystem.SystemError(operation: "flock \(path)", errno: error))
      }
      var opened = stat()
      var named = stat()
      if fstat(fd, &opened) == 0, stat(path, &named) == 0, opened.st_dev == named.st_dev,
        opened.st_ino == named.st_ino
      {
        if !directory { writePID(fd) }
        return InstanceLock(fd: fd)
      }
      close(fd)
    }
    throw .system(FileSystem.SystemError(operation: "lock \(path)", errno: ESTALE))
  }

  /// Releases the lock (closing the descriptor drops it).
  func release() {
    close(fd)
  }

  private static func writePID(_ fd: Int32) {
    let text = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
  }

  private static func readPID(_ fd: Int32) -> pid_t? {
    var buffer = [UInt8](repeating: 0, count: 32)
    let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    guard n > 0 else { return nil }
    return String(decoding: buffer.prefix(n), as: UTF8.self).split(separator: "\n").first
      .flatMap { pid_t($0) }
  }
}
