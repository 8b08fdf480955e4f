import NIOCore

/// Keeps a streaming handler's response writes at most about two `interval`s ahead of the
/// event loop that sends them.
///
/// Why: grpc-swift hands each `response.write` to the stream's event loop as a task
/// (`eventLoop.execute`, in `NIOAsyncChannel`'s writer) and returns at once; the writer waits
/// only once the loop has found the HTTP/2 stream unwritable (its flow-control window spent)
/// and said so. A handler that reads its messages from a file makes them faster than the loop
/// frames, encrypts and sends them, so it ran megabytes ahead: every message queued on the
/// loop before the window closed stayed in memory until the client read on. A `jobctl logs`
/// that stopped reading held 10–16 MiB on the server although it grants a 1 MiB window, and
/// 50 followers of one job peaked above 1 GB (docs/benchmarks.md).
///
/// Each `interval` of bytes written, the pacer queues a marker task on the loop and waits for
/// the previous one: a marker has run when the loop has processed every write queued before
/// it, so at most two intervals are queued and the writer sees the stream's writability
/// nearly in time. The handler keeps one interval of lead, so the loop never waits for it.
struct WritePacer {
  private let eventLoop: (any EventLoop)?
  private let interval: Int
  private var sinceMarker = 0
  private var marker: EventLoopFuture<Void>?

  /// - Parameters:
  ///   - eventLoop: The loop of the stream's connection; nil paces nothing.
  ///   - interval: Bytes written between two markers.
  init(eventLoop: (any EventLoop)?, interval: Int) {
    self.eventLoop = eventLoop
    self.interval = interval
  }

  /// Call after each write of `bytes`; returns once the loop is at most two intervals behind.
  mutating func wrote(_ bytes: Int) async throws {
    guard let eventLoop else { return }
    sinceMarker += bytes
    guard sinceMarker >= interval else { return }
    sinceMarker = 0
    // The marker is not cancellable, but it is a no-op behind writes the loop is already
    // processing: the wait is bounded by the loop's own progress, not by the client.
    if let marker { try await marker.get() }
    marker = eventLoop.submit {}
  }
}
