import Foundation
import Glibc

/// The jobs' output files in the data directory: `<dataDirectory>/jobs/<id>/output`, one
/// directory per job, named by its lowercase UUID.
///
/// Removal is deliberately narrow, because the worker runs as root: only an entry whose name
/// is exactly a job id, that is a real directory (not a symlink), and inside it only a regular
/// file named `output`, then the directory itself if that left it empty. Every step goes
/// through descriptors opened with `O_NOFOLLOW`, so a symlink planted anywhere on the way can
/// never redirect it outside the data directory.
struct JobDirectories: Sendable {
  /// `<dataDirectory>/jobs`.
  let path: String

  /// An output file that no live job of this manager owns: left by an earlier run.
  struct StoredOutput: Equatable {
    var id: JobID
    /// When it was last written: close to when its job ended.
    var modified: Date
    var bytes: UInt64
  }

  /// The output files present now, and how many empty job directories (left by a crash
  /// between creating a job's directory and its file) were removed. Entries that do not follow
  /// the naming are left alone.
  func scan() -> (outputs: [StoredOutput], removedEmpty: Int) {
    let jobs = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard jobs >= 0 else { return ([], 0) }
    defer { close(jobs) }
    var outputs: [StoredOutput] = []
    var removedEmpty = 0
    for name in FileSystem.entries(path) {
      guard let id = JobID(name), id.description == name else { continue }
      let directory = openat(jobs, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      guard directory >= 0 else { continue }
      var st = stat()
      let found = fstatat(directory, "output", &st, AT_SYMLINK_NOFOLLOW)
      let missing = found != 0 && errno == ENOENT
      close(directory)
      if found == 0 && (st.st_mode & S_IFMT) == S_IFREG {
        let modified = Date(
          timeIntervalSince1970: TimeInterval(st.st_mtim.tv_sec)
            + TimeInterval(st.st_mtim.tv_nsec) / 1e9)
        outputs.append(StoredOutput(id: id, modified: modified, bytes: UInt64(st.st_size)))
      } else if missing && unlinkat(jobs, name, AT_REMOVEDIR) == 0 {
        removedEmpty += 1
      }
    }
    return (outputs, removedEmpty)
  }

  /// Removes a job's output file and then its directory. A missing file or directory is not an
  /// error (already gone). Readers that have the file open keep reading it: on Linux the data
  /// stays until the last descriptor closes.
  func remove(_ id: JobID) throws(FileSystem.SystemError) {
    let name = id.description
    let jobs = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard jobs >= 0 else { throw FileSystem.SystemError(operation: "open \(path)", errno: errno) }
    defer { close(jobs) }
    let directory = openat(jobs, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    if directory < 0 {
      if errno == ENOENT { return }
      throw FileSystem.SystemError(operation: "open \(path)/\(name)", errno: errno)
    }
    var st = stat()
    if fstatat(directory, "output", &st, AT_SYMLINK_NOFOLLOW) == 0 {
      // Only the regular file we created: never follow or remove anything else.
      guard (st.st_mode & S_IFMT) == S_IFREG else {
        close(directory)
        throw FileSystem.SystemError(operation: "remove \(path)/\(name)/output", errno: EINVAL)
      }
      if unlinkat(directory, "output", 0) != 0 && errno != ENOENT {
        let code = errno
        close(directory)
        throw FileSystem.SystemError(operation: "unlink \(path)/\(name)/output", errno: code)
      }
    }
    close(directory)
    if unlinkat(jobs, name, AT_REMOVEDIR) != 0 && errno != ENOENT {
      throw FileSystem.SystemError(operation: "rmdir \(path)/\(name)", errno: errno)
    }
  }
}
