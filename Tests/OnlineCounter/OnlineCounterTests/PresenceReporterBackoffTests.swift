import ServiceKit
import Testing

@testable import CounterGateway

/// The reporter's waits between flushes, with its production configuration (no timing).
@Suite struct PresenceReporterBackoffTests {
  @Test func failedFlushesAreRetriedWithinASecondHoweverLongTheOutage() throws {
    let reporter = try PresenceReporter(
      configuration: .init(gatewayID: "test", endpoints: [HostPort(host: "127.0.0.1", port: 1)]),
      logger: Harness.logger)
    #expect(reporter.delay(afterFailures: 0) == .seconds(1))
    for failures in [1, 2, 5, 60, 1_000] {
      let delay = reporter.delay(afterFailures: failures)
      // Equal jitter over the 1 s cap: never a busy loop, never longer than the cap.
      #expect(delay >= .milliseconds(500) && delay <= .seconds(1), "\(failures): \(delay)")
    }
  }
}
