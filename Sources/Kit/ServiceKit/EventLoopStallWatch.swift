public import NIOCore
import Synchronization

/// Notices when an event loop stalls: a task scheduled on it every `interval` that runs more
/// than `threshold` late means every channel on that loop went unread (and unwritten) for
/// that long. A server with its own liveness deadlines (the gateway's pong timeout) uses it to
/// tell its own stalls from its peers' silence.
///
/// Cost: one scheduled task per loop and interval; nothing on the cooperative pool.
public enum EventLoopStallWatch {
  /// Watches every loop of `group` until the calling task is cancelled, calling `onStall`
  /// (on the stalled loop) with how late the loop ran its task, when later than `threshold`.
  public static func run(
    on group: any EventLoopGroup, interval: TimeAmount = .milliseconds(100),
    threshold: TimeAmount = .milliseconds(500),
    onStall: @escaping @Sendable (_ late: TimeAmount) -> Void
  ) async {
    let tasks = group.makeIterator().map { loop in
      let due = Mutex(NIODeadline.now() + interval)
      return loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
        let now = NIODeadline.now()
        // A repeated task's next run is scheduled from the end of this one.
        let late = due.withLock { due in
          defer { due = now + interval }
          return now - due
        }
        if late > threshold { onStall(late) }
      }
    }
    let (cancelled, cancel) = AsyncStream.makeStream(of: Void.self)
    await withTaskCancellationHandler {
      for await _ in cancelled {}
    } onCancel: {
      cancel.finish()
    }
    for task in tasks { task.cancel() }
  }
}
