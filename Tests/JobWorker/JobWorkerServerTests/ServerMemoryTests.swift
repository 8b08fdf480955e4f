import Foundation
import TestSupport
import Testing

/// What clients that stop reading cost the server (issue 13): a real `jobworker` process, real
/// `jobctl` clients whose standard output is a pipe nobody reads for a while. Part of the
/// serialized `jobctl` suite.
extension CLITests {
  @Test(
    "readers that stop reading hold a few hundred KiB each on the server, not the backlog",
    .requires(.cgroups), .requires(.product("jobworker")))
  func stalledReadersAreBoundedOnTheServer() async throws {
    let pki = try TestPKI()
    defer { pki.remove() }
    let port = try freeLoopbackPort()
    let layout = pki.layout
    let arguments = [
      "--listen", "127.0.0.1:\(port)", "--metrics-listen", "127.0.0.1:0",
      "--ca", layout.caCertificate, "--cert", layout.serverCertificate,
      "--key", layout.serverKey, "--data-dir", pki.directory + "/data",
      "--cgroup-name", "jobworker-test-\(UUID().uuidString.prefix(8))", "--log-level", "warning",
    ]
    try await withBackgroundProcess(builtProduct("jobworker"), arguments) { server in
      // Stopped gracefully at the end (SIGTERM), so that it removes its jobs' cgroups.
      defer { server.signal(SIGTERM) }
      let up = await eventually(timeout: .seconds(20)) {
        (try? await self.jobctl(["list", "--timeout", "1"], pki: pki, port: port))?.status == 0
      }
      try #require(up, "jobworker did not answer: \(server.log)")
      let size = 32 << 20
      let id = try await finishedJob("head -c \(size) /dev/zero", pki: pki, port: port)
      let readers = 10
      // The baseline: the server after as many concurrent connections and streams (of a small
      // job) as the stalled readers will open, so that their TLS, HTTP/2 and allocator set-up
      // is not counted as what a stalled stream holds.
      let small = try await finishedJob("head -c 65536 /dev/zero", pki: pki, port: port)
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<readers {
          group.addTask {
            let result = try await self.jobctl(["logs", small], pki: pki, port: port)
            #expect(result.status == 0 && result.stdout.utf8.count == 65536, "\(result.stderr)")
          }
        }
        try await group.waitForAll()
      }
      let baselineKiB = try #require(Self.memoryKiB(server.pid, "VmRSS"))

      // Each reader's jobctl writes into a pipe that nobody reads for `stall` seconds (it
      // fills at 64 KiB, then jobctl stops reading its stream), then the pipe is drained and
      // counted: every reader must still get every byte.
      let stall = 8
      let script = "\"$0\" logs \"$1\" | { sleep \"$2\"; wc -c; }"
      let environment = Self.environment(pki: pki, port: port)
      async let results = withThrowingTaskGroup(of: ProcessResult.self) { group in
        for _ in 0..<readers {
          group.addTask {
            try await runProcess(
              "/bin/bash", ["-c", script, Self.jobctl, id, "\(stall)"], environment: environment,
              timeout: .seconds(120))
          }
        }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      // Sampled while every reader is stalled (their streams open within the first second
      // or two; the drain starts after `stall` seconds).
      var peakKiB = baselineKiB
      let sampleUntil = ContinuousClock.now + .seconds(stall - 1)
      while ContinuousClock.now < sampleUntil {
        peakKiB = max(peakKiB, Self.memoryKiB(server.pid, "VmRSS") ?? 0)
        try await Task.sleep(for: .milliseconds(250))
      }
      for result in try await results {
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.trimmingCharacters(in: .whitespaces) == "\(size)\n")
      }
      // Each stalled stream may hold on the server: its pacing lead (2 × 128 KiB), one
      // suspended message (32 KiB), HTTP/2's 8 KiB stream watermark and its connection's TLS
      // and HTTP/2 buffers; the client's 1 MiB window is in flight to it, not held. About
      // 0.6 MiB each was measured (debug build); before the writes were paced, 10–16 MiB each
      // (the messages queued on the event loop before the window closed). 3 MiB each leaves
      // the allocator its margin.
      let growthKiB = peakKiB - baselineKiB
      #expect(
        growthKiB < readers * 3 * 1024,
        "the server grew from \(baselineKiB) KiB to \(peakKiB) KiB with \(readers) stalled readers")
      // The graceful stop (the deferred SIGTERM) must end in time.
      server.signal(SIGTERM)
      #expect(await server.waitForExit(timeout: .seconds(30)) != nil, "\(server.log)")
    }
  }
}
