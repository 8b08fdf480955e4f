import CJobInit
import Glibc

/// Where the job's init looks for the command: the paths it tries, in order, as the job's user
/// (see `run_program` in jobinit.c).
///
/// Working this out touches no file: whether a path exists, is a regular file or may be run is
/// decided by `execve` in the job, with the job's credentials. The worker runs as root, and its
/// own checks used to tell a user what only root may see (`/root/x` "No such file or
/// directory" against "Permission denied" or "not a regular file").
struct ProgramSearch: Sendable {
  /// The command as requested: an absolute path or a bare name.
  let command: String
  /// Absolute paths to try in order: the command itself, or one per absolute `PATH` entry.
  let candidates: [String]
  /// The `PATH` searched for a bare name; nil for an absolute command.
  let searchPath: String?

  /// - Throws: `invalidArgument` for an empty or relative command with a slash;
  ///   `failedToStart` when `PATH` has no absolute entry to look in.
  init(command: String, environment: [String]) throws(JobError) {
    guard !command.isEmpty else { throw JobError(.invalidArgument, "command is empty") }
    self.command = command
    if command.contains("/") {
      guard command.hasPrefix("/") else {
        throw JobError(
          .invalidArgument, "command \"\(command)\" must be an absolute path or a bare name")
      }
      candidates = [command]
      searchPath = nil
      return
    }
    let path =
      environment.last(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) }
      ?? Validation.defaultPath
    candidates = path.split(separator: ":").filter { $0.hasPrefix("/") }.map {
      "\($0)/\(command)"
    }
    searchPath = path
    guard !candidates.isEmpty else { throw notFound }
  }

  /// The path of the candidate the init reported, or the command if the index is out of range.
  func candidate(_ index: Int32) -> String {
    candidates.indices.contains(Int(index)) ? candidates[Int(index)] : command
  }

  /// The start error for the init's report that `execve` failed with `errno` on `candidate`.
  /// For a bare name that no entry had, the old wording; every other error names the path.
  func execError(errno code: Int32, candidate index: Int32) -> JobError {
    if searchPath != nil && (code == ENOENT || code == ENOTDIR) { return notFound }
    let kind: JobError.Code = code == EAGAIN || code == ENOMEM ? .resourceExhausted : .failedToStart
    return JobError(kind, "execve \(candidate(index)): \(errnoText(code))")
  }

  private var notFound: JobError {
    JobError(.failedToStart, "executable \"\(command)\" not found in PATH \(searchPath ?? "")")
  }
}
