import Synchronization
import Testing

@testable import JobWorkerCore

@Suite("Reactor")
struct ReactorTests {
  /// `execute` work runs on the reactor's own thread in the order it was queued; `stop()`
  /// returns only after queued work ran; work queued after that runs in place.
  @Test func executeRunsWorkInOrderOnTheReactorThread() async throws {
    let reactor = try Reactor()
    let log = Mutex<[String]>([])
    for index in 0..<100 {
      reactor.execute {
        let thread = currentThreadName()
        log.withLock { $0.append("\(index) \(thread)") }
      }
    }
    await reactor.stop()
    #expect(log.withLock { $0 } == (0..<100).map { "\($0) \(Reactor.threadName)" })

    let ranInPlace = Mutex(false)
    reactor.execute { ranInPlace.withLock { $0 = true } }
    #expect(ranInPlace.withLock { $0 })
    // Stopping again is a no-op.
    await reactor.stop()
  }
}
