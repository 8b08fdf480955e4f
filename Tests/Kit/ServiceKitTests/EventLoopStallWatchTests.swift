import NIOCore
import NIOPosix
import ServiceKit
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite struct EventLoopStallWatchTests {
  /// A loop blocked for 1.5 s (a stand-in for a starved or busy loop) is reported, with at
  /// least the time its watch task could not run: due 100 ms after the block began at most,
  /// so at least 1.4 s late.
  @Test func aBlockedLoopIsReportedWithHowLateItRan() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let reports = Reports()
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask {
        await EventLoopStallWatch.run(on: group) { late in reports.add(late) }
      }
      defer { tasks.cancelAll() }
      try await Task.sleep(for: .milliseconds(300))
      group.next().execute { usleep(1_500_000) }
      let reported = await eventually(timeout: .seconds(20)) { reports.worst != nil }
      #expect(reported)
      let worst = reports.worst ?? .zero
      #expect(worst >= .milliseconds(1_400), "reported \(worst)")
    }
    try await group.shutdownGracefully()
  }
}

private final class Reports: Sendable {
  private let lateness = Mutex<[TimeAmount]>([])
  func add(_ late: TimeAmount) { lateness.withLock { $0.append(late) } }
  var worst: TimeAmount? { lateness.withLock { $0.max() } }
}
