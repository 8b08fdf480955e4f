import NIOCore
import NIOHTTP2

/// HTTP/2 keepalive: after ``ConnectionKeepalive/interval`` with nothing read on a
/// connection, the server sends a PING, and closes the connection unless something (the ack,
/// or anything else) is read within ``ConnectionKeepalive/timeout``.
public struct ConnectionKeepalive: Sendable, Equatable {
  public var interval: Duration
  public var timeout: Duration

  public init(interval: Duration = .seconds(30), timeout: Duration = .seconds(10)) {
    self.interval = interval
    self.timeout = timeout
  }

  /// How often a loop's ``KeepaliveSweep`` looks at its connections: a quarter of the shorter
  /// of the two (2.5 s by default), so a ping leaves at most that late and a dead peer is
  /// closed at most that late.
  var sweepPeriod: TimeAmount {
    max(TimeAmount(min(interval, timeout) / 4), .milliseconds(10))
  }
}

/// One connection's keepalive, with no timer of its own: each read only notes the time in its
/// event loop's ``KeepaliveSweep``, which checks the connection a few times per interval.
///
/// "Read" is any read from the socket, whatever the frames in it (stream frames included):
/// the handler sits after `NIOHTTP2Handler` and notes the time at the end of each read
/// (`channelReadComplete`, which every socket read ends with), not per frame. So only a quiet
/// connection is pinged, as grpc-go's server keepalive does: one whose client answers its
/// pings every second never is. (Noting only connection-level frames, as the first form did,
/// pinged every connection every interval: at 10,000 connections, 333 PINGs and acks a
/// second, each a system call each way, for peers whose pongs already proved them alive.)
///
/// **Why not a timer per connection.** `NIOHTTP2ServerConnectionManagementHandler`'s keepalive
/// restarts its timer at the end of every read, i.e. cancels a scheduled task and schedules
/// another, and NIO finds a cancelled task in its event loop's heap by a linear search: with
/// 10,000 connections of one `Connect` stream each, that search was 11% of the gateway's CPU
/// (`perf`, 10,000 clients on 10,000 connections). A timer re-armed only when it fired (this
/// handler's first form) still cost 2.5% there: two heap operations per connection per 30 s
/// in a heap of thousands of tasks, each moving cold entries. A sweep that called each
/// handler cost 2.3% (a cache miss or two per connection and visit); the sweep reads its own
/// array instead, and touches a handler only to ping or close its connection.
final class KeepaliveHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let sweep: KeepaliveSweep
  private var context: ChannelHandlerContext?
  /// Where the sweep keeps this connection's times; it moves them when another leaves.
  fileprivate var index: Int?
  private let pingData = HTTP2PingData(withInteger: .random(in: .min ... .max))

  init(sweep: KeepaliveSweep) {
    self.sweep = sweep
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    sweep.add(self, now: .now())
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    leave()
  }

  func channelInactive(context: ChannelHandlerContext) {
    leave()
    context.fireChannelInactive()
  }

  private func leave() {
    sweep.remove(self)
    context = nil
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    if let index { sweep.heard(at: index, now: .now()) }
    context.fireChannelReadComplete()
  }

  fileprivate func ping() {
    guard let context else { return }
    let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(pingData, ack: false))
    context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
  }

  fileprivate func close() {
    context?.close(promise: nil)
  }
}

/// The keepalive checks of one event loop's connections: one scheduled task per loop, while
/// the loop has connections (none runs on an idle loop), that checks every connection once
/// per ``ConnectionKeepalive/sweepPeriod``, a fiftieth of them at a time. Each connection's
/// last read and unanswered ping are kept here, in one array, so a visit reads contiguous
/// memory rather than every connection's handler.
///
/// **Why in slices.** Connections opened together (a load test's ramp, a reconnect storm
/// after a failover) go quiet together: checking all of a loop's connections at once sent
/// their 30 s PINGs in one task, 5,000 writes in a row, and the loop's ping timer woke up to
/// 250 ms late (`gateway_ping_timer_lateness_seconds`; the clients' ping interval p99.9 rose
/// from ~1,006 to ~1,100 ms at 10,000 connections). A slice sends at most a fiftieth of them.
/// On its event loop only.
final class KeepaliveSweep {
  private struct Entry {
    let handler: KeepaliveHandler
    var lastRead: NIODeadline
    /// Sent and not yet answered (by anything read since).
    var pingSentAt: NIODeadline?
  }

  private let eventLoop: any EventLoop
  private let interval: TimeAmount
  private let timeout: TimeAmount
  /// One visit every `step`, `slices` visits per sweep period.
  private let step: TimeAmount
  private let slices: Int
  private var entries: [Entry] = []
  /// Where the next visit starts.
  private var cursor = 0
  private var scheduled: Scheduled<Void>?

  init(eventLoop: any EventLoop, keepalive: ConnectionKeepalive) {
    self.eventLoop = eventLoop
    self.interval = TimeAmount(keepalive.interval)
    self.timeout = TimeAmount(keepalive.timeout)
    let period = keepalive.sweepPeriod
    self.step = max(.nanoseconds(period.nanoseconds / 50), .milliseconds(10))
    self.slices = max(Int(period.nanoseconds / step.nanoseconds), 1)
  }

  fileprivate func add(_ handler: KeepaliveHandler, now: NIODeadline) {
    guard handler.index == nil else { return }
    handler.index = entries.count
    entries.append(Entry(handler: handler, lastRead: now))
    if scheduled == nil { arm() }
  }

  fileprivate func remove(_ handler: KeepaliveHandler) {
    guard let index = handler.index else { return }
    handler.index = nil
    let last = entries.removeLast()
    if index < entries.count {
      entries[index] = last
      last.handler.index = index
    }
    if entries.isEmpty {
      scheduled?.cancel()
      scheduled = nil
    }
  }

  fileprivate func heard(at index: Int, now: NIODeadline) {
    entries[index].lastRead = now
  }

  private func arm() {
    scheduled = eventLoop.assumeIsolated().scheduleTask(in: step) { self.visit() }
  }

  /// Pings the connections of the next slice quiet for the interval, closes those whose ping
  /// went unanswered for the timeout. (A connection that leaves moves the last entry into
  /// its place, which may then be checked twice or skipped in one period: harmless.)
  private func visit() {
    scheduled = nil
    let now = NIODeadline.now()
    var pings: [KeepaliveHandler] = []
    var closes: [KeepaliveHandler] = []
    let count = (entries.count + slices - 1) / slices
    if cursor >= entries.count { cursor = 0 }
    let end = min(cursor + count, entries.count)
    defer { cursor = end }
    for index in cursor..<end {
      if let sent = entries[index].pingSentAt {
        if entries[index].lastRead >= sent {
          entries[index].pingSentAt = nil  // answered
        } else {
          if now - sent >= timeout { closes.append(entries[index].handler) }
          continue
        }
      }
      if now - entries[index].lastRead >= interval {
        entries[index].pingSentAt = now
        pings.append(entries[index].handler)
      }
    }
    // After the scan: a close leaves `entries` (and moves another entry).
    for handler in pings { handler.ping() }
    for handler in closes { handler.close() }
    if !entries.isEmpty, scheduled == nil { arm() }
  }
}
