import Foundation
import TestSupport
import Testing

/// The start path, memory, CLI path and output path benchmarks (issue 13) in their shortest form: they run against
/// the built products, print every row and clean up. Only that they work is checked, never a
/// figure: performance is measured by running them in full (`docs/benchmarks.md`).
@Suite(
  "Job worker benchmark scripts", .serialized, .requires(.cgroups),
  .requires(.product("jobworker")), .requires(.product("jobctl")),
  .requires(.product("jobinit")),
  .requires(.tool("python3", install: "apt-get install python3")))
struct BenchmarkScriptTests {
  static let binDirectory = URL(fileURLWithPath: builtProduct("jobworker"))
    .deletingLastPathComponent().path

  func runScript(_ name: String, _ arguments: [String]) async throws -> ProcessResult {
    let python = try #require(TestEnvironment.which("python3"))
    let script = packageRoot.appending(path: "Benchmarks/\(name)").path
    // Bounded by the scripts' own per-call timeouts; 120 s is far above a short run (~5 s).
    return try await runProcess(
      python, [script, Self.binDirectory] + arguments, timeout: .seconds(120))
  }

  @Test(
    .requiresPythonModule("grpc", install: "grpcio"),
    .requires(.tool("unshare", install: "apt-get install util-linux")))
  func startScriptRuns() async throws {
    let result = try await runScript("job-start.py", ["3", "5"])
    #expect(result.status == 0, "\(result.output)")
    for row in [
      "StartJob /bin/true, 3 runs:", "baseline (unshare ... /bin/true):",
      "5 sleep jobs one after another:", "with 5 jobs running: StartJob /bin/true p50",
      "with 5 jobs running: server RSS", "(server shutdown with the jobs:",
    ] {
      #expect(result.stdout.contains(row), "no \(row) in: \(result.output)")
    }
  }

  @Test(.requiresPythonModule("grpc", install: "grpcio"))
  func memoryScriptRuns() async throws {
    let result = try await runScript("job-memory.py", ["3", "1"])
    #expect(result.status == 0, "\(result.output)")
    for row in [
      "MemTotal-MemAvailable", "SUnreclaim", "PageTables", "worker RSS growth per job:",
      "host memory per job above the program:", "the same as the sum of",
      "slab caches grown most per job",
      "(server shutdown with the jobs:",
    ] {
      #expect(result.stdout.contains(row), "no \(row) in: \(result.output)")
    }
  }

  /// 1 MiB, two runs of each of two clients (the same `jobctl` twice, through
  /// `COMPARE_JOBCTL`), the TLS ceiling, one stalled reader, two followers. (The grpc-swift
  /// floor, `FLOOR`, needs Benchmarks/Micro's build and is not run here.)
  @Test(.requires(.tool("bash", install: "apt-get install bash")))
  func outputScriptRuns() async throws {
    let bash = try #require(TestEnvironment.which("bash"))
    let script = packageRoot.appending(path: "Benchmarks/job-output.sh").path
    var environment = ProcessInfo.processInfo.environment
    environment["COMPARE_JOBCTL"] = Self.binDirectory + "/jobctl"
    // Bounded by the script's own timeouts; 180 s is far above a short run (~15 s).
    let result = try await runProcess(
      bash, [script, Self.binDirectory, "1", "2", "2", "1"], environment: environment,
      timeout: .seconds(180))
    #expect(result.status == 0, "\(result.output)")
    for row in [
      "logs: exact bytes", "2 runs each: this compare", "median elapsed_s:",
      "median server_cpu_s:", "the machine's ceiling:", "tls-loopback TLSv1.3",
      "with 1 stalled readers", "followers: 2, failed 0, wrong byte count 0", "aggregate:",
    ] {
      #expect(result.stdout.contains(row), "no \(row) in: \(result.output)")
    }
  }

  @Test func cliScriptRuns() async throws {
    let result = try await runScript("job-cli.py", ["2", "3"])
    #expect(result.status == 0, "\(result.output)")
    for row in [
      "baseline: /bin/true", "jobctl --help", "jobctl list", "jobctl run -- /bin/true",
      "3 `jobctl start -- sleep 600` one after another:", "(server shutdown with the jobs:",
    ] {
      #expect(result.stdout.contains(row), "no \(row) in: \(result.output)")
    }
  }
}
