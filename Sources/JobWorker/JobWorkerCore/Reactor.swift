import CJobInit
import Foundation
import Glibc
import Synchronization

/// One OS thread that waits with epoll on every job's output pipe, status pipe and pidfd and
/// runs the job's handler for each ready descriptor. One thread for all jobs (instead of one
/// per job or a blocking waitpid per job) keeps a thousand jobs cheap, and keeps blocking
/// kernel waits off the Swift cooperative pool. Handlers and `execute` work run on this thread
/// and may block only for short, bounded kernel waits (a cgroup freezing, a cgroup's last task
/// being released, an abandoned init being reaped).
final class Reactor: Sendable {
  /// What a handler asks for after it ran.
  enum Disposition { case keep, remove }
  /// `scratch` is a buffer owned by the reactor thread, valid during the call only: output
  /// pumps read into it instead of allocating per read.
  typealias Handler = @Sendable (_ scratch: UnsafeMutableRawBufferPointer) -> Disposition
  static let scratchSize = 64 * 1024
  /// The thread's name, as ps and debuggers show it (Linux refuses names over 15 bytes).
  static let threadName = "job-reactor"

  private struct State {
    var handlers: [UInt64: (fd: Int32, handler: Handler)] = [:]
    var nextToken: UInt64 = 1
    /// Work from `execute`, run in order on the thread.
    var work: [@Sendable () -> Void] = []
    var stopping = false
    /// Set once the thread has run the last queued work; later `execute` calls run in place.
    var stopped = false
    var stopWaiters: [CheckedContinuation<Void, Never>] = []
  }

  private let epollFD: Int32
  /// An eventfd that wakes the thread for `execute` and `stop()`.
  private let wakeFD: Int32
  private let state = Mutex(State())
  private static let wakeToken: UInt64 = 0

  init() throws(JobError) {
    epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
    guard epollFD >= 0 else { throw JobError(.resourceExhausted, "epoll_create1: \(errnoText())") }
    wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
    guard wakeFD >= 0 else {
      close(epollFD)
      throw JobError(.resourceExhausted, "eventfd: \(errnoText())")
    }
    var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: Self.wakeToken))
    epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
    let thread = Thread { [self] in
      // Through procfs: Foundation's `Thread.name` does not reliably reach the kernel on Linux.
      try? FileSystem.write("/proc/thread-self/comm", Self.threadName)
      self.loop()
    }
    thread.start()
  }

  /// Closed here rather than when the thread ends, so that a late `execute`, `stop` or
  /// `remove` never touches a descriptor number that was reused meanwhile.
  deinit {
    close(wakeFD)
    close(epollFD)
  }

  /// Watches `fd` for input (level-triggered); `handler` runs on the reactor thread until it
  /// returns `.remove` or `remove(token:)` is called. The caller keeps owning `fd` and closes
  /// it only after it was removed.
  func add(fd: Int32, handler: @escaping Handler) throws(JobError) -> UInt64 {
    let token = state.withLock { state in
      let token = state.nextToken
      state.nextToken += 1
      state.handlers[token] = (fd, handler)
      return token
    }
    var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: token))
    if epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) != 0 {
      let message = errnoText()
      _ = state.withLock { $0.handlers.removeValue(forKey: token) }
      throw JobError(.resourceExhausted, "epoll_ctl: \(message)")
    }
    return token
  }

  /// Stops watching; safe to call more than once and from any thread. Tokens are never
  /// reused, so a stale event for a removed token is ignored.
  func remove(token: UInt64) {
    guard let entry = state.withLock({ $0.handlers.removeValue(forKey: token) }) else { return }
    epoll_ctl(epollFD, EPOLL_CTL_DEL, entry.fd, nil)
  }

  /// Runs `work` on the reactor thread, after earlier `execute` work: for blocking kernel waits
  /// that must not hold a thread of the cooperative pool, and for work that must not interleave
  /// with the handlers. Once the thread has ended (after `stop()`), `work` runs in place.
  func execute(_ work: @escaping @Sendable () -> Void) {
    let queued = state.withLock { state -> Bool in
      guard !state.stopped else { return false }
      state.work.append(work)
      return true
    }
    guard queued else { return work() }
    wake()
  }

  /// Ends the thread and waits until it has left its loop and run every queued `execute` work.
  func stop() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { state -> Bool in
        if state.stopped { return true }
        state.stopping = true
        state.stopWaiters.append(continuation)
        return false
      }
      if done {
        continuation.resume()
        return
      }
      wake()
    }
  }

  private func wake() {
    var one: UInt64 = 1
    _ = Glibc.write(wakeFD, &one, 8)
  }

  private func loop() {
    var events = [epoll_event](repeating: epoll_event(), count: 64)
    let scratch = UnsafeMutableRawBufferPointer.allocate(
      byteCount: Self.scratchSize, alignment: 16)
    defer { scratch.deallocate() }
    while true {
      let count = events.withUnsafeMutableBufferPointer {
        epoll_wait(epollFD, $0.baseAddress, Int32($0.count), -1)
      }
      if count < 0 {
        if errno == EINTR { continue }
        break
      }
      for event in events[0..<Int(count)] {
        let token = event.data.u64
        if token == Self.wakeToken {
          // Level-triggered: reset the counter, or epoll_wait would return at once again.
          var value: UInt64 = 0
          _ = Glibc.read(wakeFD, &value, 8)
          for work in takeWork(last: false) { work() }
          continue
        }
        guard let entry = state.withLock({ $0.handlers[token] }) else { continue }
        if entry.handler(scratch) == .remove { remove(token: token) }
      }
      // Checked after the wake-up was consumed: `stop()` sets the flag before it writes.
      if state.withLock({ $0.stopping }) { break }
    }
    // `stopped` is set only once the queue is empty, so work that `execute` then runs in
    // place never overtakes work queued before it.
    var work = takeWork(last: true)
    while !work.isEmpty {
      for item in work { item() }
      work = takeWork(last: true)
    }
    let waiters = state.withLock { state in
      defer { state.stopWaiters = [] }
      return state.stopWaiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Takes the work queued so far; with `last`, marks the reactor stopped if there is none.
  private func takeWork(last: Bool) -> [@Sendable () -> Void] {
    state.withLock { state in
      if last && state.work.isEmpty { state.stopped = true }
      defer { state.work = [] }
      return state.work
    }
  }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
