import Foundation
import TestSupport
import Testing

/// The `jobworker` binary refuses bad retention settings before it starts anything, with an
/// error that says what is wrong, from a flag or from its environment twin.
@Suite("jobworker flags", .requires(.product("jobworker")))
struct JobWorkerFlagsTests {
  static let jobworker = builtProduct("jobworker")

  @Test(arguments: [
    (["--retention", "0s"], "Error: --retention must be at least 1m (got 0s)"),
    (["--retention", "30s"], "Error: --retention must be at least 1m (got 30s)"),
    (
      ["--retention", "30"],
      "Error: The value '30' is invalid for '--retention <retention>': '30' has no unit; use a "
        + "number with a unit (d, h, m or s), e.g. 24h, 30m or 1h30m"
    ),
    (
      ["--retention=-5m"],
      "Error: The value '-5m' is invalid for '--retention <retention>': '-5m' is negative; use a "
        + "number with a unit (d, h, m or s), e.g. 24h, 30m or 1h30m"
    ),
    (
      ["--max-stored-output", "0"],
      "Error: --max-stored-output (0) must be at least --max-output (64M): the output of one job "
        + "must fit"
    ),
    (
      ["--max-output", "64M", "--max-stored-output", "32M"],
      "Error: --max-stored-output (32M) must be at least --max-output (64M): the output of one "
        + "job must fit"
    ),
    (
      ["--max-stored-output", "lots"],
      "Error: The value 'lots' is invalid for '--max-stored-output <max-stored-output>'"
    ),
  ])
  func invalidFlags(arguments: [String], message: String) async throws {
    let result = try await runProcess(Self.jobworker, arguments)
    #expect(result.status == 64)
    #expect(result.stderr.hasPrefix(message + "\n"), "\(result.stderr)")
  }

  @Test func invalidEnvironment() async throws {
    var environment = ProcessInfo.processInfo.environment
    environment["JOBWORKER_RETENTION"] = "1h30"
    let result = try await runProcess(Self.jobworker, [], environment: environment)
    #expect(result.status == 64)
    #expect(
      result.stderr
        == "error: environment variable JOBWORKER_RETENTION=1h30 is not a valid value: '1h30' "
        + "ends in a number without a unit; use a number with a unit (d, h, m or s), e.g. 24h, "
        + "30m or 1h30m\n")
  }

  /// A missing `jobinit` stops the worker at start, from the flag or its environment twin,
  /// naming the file, before it creates or locks anything.
  @Test(.requires(.root), arguments: [true, false])
  func missingJobinit(fromEnvironment: Bool) async throws {
    let missing = "/nonexistent-\(UUID().uuidString)/jobinit"
    let dataDirectory = NSTemporaryDirectory() + "jobworker-jobinit-\(UUID().uuidString)"
    var environment = ProcessInfo.processInfo.environment
    var arguments = ["--data-dir", dataDirectory, "--listen", "127.0.0.1:0"]
    if fromEnvironment {
      environment["JOBWORKER_JOBINIT"] = missing
    } else {
      arguments += ["--jobinit", missing]
    }
    let result = try await runProcess(Self.jobworker, arguments, environment: environment)
    #expect(result.status != 0)
    #expect(
      result.stderr.contains(
        "cannot use \(missing) as the jobs' init: No such file or directory"),
      "\(result.stderr)")
    #expect(!FileManager.default.fileExists(atPath: dataDirectory))
  }
}
