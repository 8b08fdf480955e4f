import CJobInit
import Glibc

/// The `jobinit` executable that becomes PID 1 of every job (Sources/JobWorker/jobinit),
/// opened once when the manager starts.
///
/// The manager keeps an `O_PATH` descriptor and every launch execs that descriptor, not the
/// path: the file checked at start-up is the file every job runs, so a missing or broken
/// install fails the start of the worker, not each job, and replacing the file (an upgrade)
/// cannot pair this worker with another release's init.
final class InitExecutable: Sendable {
  /// Where it was found.
  let path: String
  /// Close-on-exec `O_PATH` descriptor, exec'd by each launch's child.
  let descriptor: Int32

  /// - Parameter path: nil for `jobinit` next to the running executable.
  /// - Throws: `JobError.unavailable` when the file is missing, not a regular file or not
  ///   executable.
  init(path: String?) throws(JobError) {
    let path = path ?? Self.nextToExecutable()
    let descriptor = cjobinit_open_executable(path)
    guard descriptor >= 0 else {
      throw JobError(
        .unavailable,
        "cannot use \(path) as the jobs' init: \(errnoText(-descriptor)); build it (swift build "
          + "--product jobinit) and install it next to the job worker, or give its path "
          + "(JobManager.Configuration.initExecutable, jobworker --jobinit)")
    }
    self.path = path
    self.descriptor = descriptor
  }

  deinit { close(descriptor) }

  /// `jobinit` in the directory of the running executable (`/proc/self/exe`): where
  /// `swift build` puts both, and where an install puts it beside `jobworker`.
  static func nextToExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return "jobinit" }
    let executable = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = executable.lastIndex(of: "/") else { return "jobinit" }
    return executable[...slash] + "jobinit"
  }
}
