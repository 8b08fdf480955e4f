import Foundation
import TestSupport
import Testing

/// An unauthenticated peer floods the gateway with small HTTP/2 frames cut so that every read
/// ends inside a frame header: the pattern that made swift-nio-http2's decoder double its
/// buffer again and again in `jobctl` while DATA frames it had handed on were still held (see
/// `HTTP2FrameAligner`). The gateway reads its streams as frames arrive, so it should hold
/// nothing of it; `Benchmarks/h2-split-flood.py` runs the real `gateway` binary, sends 8 MiB
/// per pattern (connection-level WINDOW_UPDATEs; a `Connect` stream fed one byte per DATA
/// frame) and fails when the gateway's anonymous memory grew by more than 4 MiB plus an eighth
/// of what was sent (5 MiB here), where a decoder that kept what it received grows by 8 MiB or
/// more. Measured: +0.4 to 2.5 MiB whether 8, 32 or 96 MiB were sent (release and debug
/// builds), i.e. a fixed cost of serving the stream, not a buffer growing with the flood.
@Suite struct SplitFrameFloodTests {
  @Test(
    .requires(.product("gateway")),
    .requires(.tool("python3", install: "apt-get install python3")))
  func framesSplitAcrossReadsDoNotGrowTheGateway() async throws {
    let python = try #require(TestEnvironment.which("python3"))
    let script = packageRoot.appending(path: "Benchmarks/h2-split-flood.py").path
    // The script bounds itself: 100 s for both patterns (a debug gateway takes 8 MiB of
    // one-byte frames in ~12 s on an idle 2-core machine), 20 s for the gateway's shutdown.
    let result = try await runProcess(
      python, [script, builtProduct("gateway"), "8", "100"], timeout: .seconds(150))
    #expect(result.status == 0, "\(result.output)")
    for row in ["split-flood control:", "split-flood stream:"] {
      #expect(result.stdout.contains(row), "no \(row) in: \(result.output)")
    }
  }
}
