import CJobInit
import Foundation
import Glibc
import Synchronization

/// One OS thread that waits with epoll on every job's output pipe, status pipe and pidfd and
/// runs the job's handler for each ready descriptor. One thread for all jobs (instead of one
/// per job or a blocking waitpid per job) keeps a thousand jobs cheap, and keeps blocking
/// kernel waits off the Swift cooperative pool. Handlers run on this thread and must not block
/// for long.
final class Reactor: Sendable {
  /// What a handler asks for after it ran.
  enum Disposition { case keep, remove }
  /// `scratch` is a buffer owned by the reactor thread, valid during the call only: output
  /// pumps read into it instead of allocating per read.
  typealias Handler = @Sendable (_ scratch: UnsafeMutableRawBufferPointer) -> Disposition
  static let scratchSize = 64 * 1024

  private struct State {
    var handlers: [UInt64: (fd: Int32, handler: Handler)] = [:]
    var nextToken: UInt64 = 1
    var stopping = false
    var stopped = false
    var stopWaiters: [CheckedContinuation<Void, Never>] = []
  }

  private let epollFD: Int32
  /// An eventfd that wakes the thread for `stop()`.
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
    let thread = Thread { [self] in self.loop() }
    thread.name = "jobworker-reactor"
    thread.start()
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

  /// Ends the thread and waits until it has left its loop; closes the epoll descriptors.
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
      var one: UInt64 = 1
      _ = Glibc.write(wakeFD, &one, 8)
    }
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
      if state.withLock({ $0.stopping }) { break }
      for event in events[0..<Int(count)] where event.data.u64 != Self.wakeToken {
        let token = event.data.u64
        guard let entry = state.withLock({ $0.handlers[token] }) else { continue }
        if entry.handler(scratch) == .remove { remove(token: token) }
      }
    }
    close(wakeFD)
    close(epollFD)
    let waiters = state.withLock { state in
      state.stopped = true
      defer { state.stopWaiters = [] }
      return state.stopWaiters
    }
    for waiter in waiters { waiter.resume() }
  }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
