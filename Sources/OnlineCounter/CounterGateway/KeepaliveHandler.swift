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

/// One connection's keepalive, with no timer of its own: each read only notes the time, and the
/// event loop's ``KeepaliveSweep`` checks the connection a few times per interval.
///
/// It sits after `NIOHTTP2Handler`, so "read" means connection-level frames (PING, SETTINGS,
/// WINDOW_UPDATE on stream 0): stream frames go to the stream channels. So a busy connection
/// is pinged every interval too (one PING and its ack per 30 s), which also proves the peer
/// alive at the HTTP/2 level.
///
/// **Why not a timer per connection.** `NIOHTTP2ServerConnectionManagementHandler`'s keepalive
/// restarts its timer at the end of every read, i.e. cancels a scheduled task and schedules
/// another, and NIO finds a cancelled task in its event loop's heap by a linear search: with
/// 10,000 connections of one `Connect` stream each, that search was 11% of the gateway's CPU
/// (`perf`, 10,000 clients on 10,000 connections). A timer re-armed only when it fired (this
/// handler's first form) still cost 2.5% there: two heap operations per connection per 30 s
/// in a heap of thousands of tasks, each moving cold entries. The sweep costs one comparison
/// per connection per visit.
final class KeepaliveHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let keepalive: ConnectionKeepalive
  private let sweep: KeepaliveSweep
  private var context: ChannelHandlerContext?
  private var lastRead = NIODeadline.now()
  /// Sent and not yet answered (by anything read since).
  private var pingSentAt: NIODeadline?
  private let pingData = HTTP2PingData(withInteger: .random(in: .min ... .max))

  init(keepalive: ConnectionKeepalive, sweep: KeepaliveSweep) {
    self.keepalive = keepalive
    self.sweep = sweep
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    lastRead = .now()
    sweep.add(self)
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

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    lastRead = .now()
    context.fireChannelRead(data)
  }

  /// The sweep's look at `now`: pings a connection quiet for the interval, closes one whose
  /// ping went unanswered for the timeout.
  fileprivate func check(now: NIODeadline) {
    guard let context else { return }
    if let sent = pingSentAt {
      if lastRead >= sent {
        pingSentAt = nil  // answered
      } else {
        if now - sent >= TimeAmount(keepalive.timeout) { context.close(promise: nil) }
        return
      }
    }
    if now - lastRead >= TimeAmount(keepalive.interval) {
      pingSentAt = now
      let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(pingData, ack: false))
      context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
    }
  }
}

/// The keepalive checks of one event loop's connections: one scheduled task per loop, every
/// ``ConnectionKeepalive/sweepPeriod``, while the loop has connections (none runs on an idle
/// loop). On its event loop only.
final class KeepaliveSweep {
  private let eventLoop: any EventLoop
  private let period: TimeAmount
  private var handlers: [ObjectIdentifier: KeepaliveHandler] = [:]
  private var scheduled: Scheduled<Void>?

  init(eventLoop: any EventLoop, period: TimeAmount) {
    self.eventLoop = eventLoop
    self.period = period
  }

  fileprivate func add(_ handler: KeepaliveHandler) {
    handlers[ObjectIdentifier(handler)] = handler
    if scheduled == nil { arm() }
  }

  fileprivate func remove(_ handler: KeepaliveHandler) {
    guard handlers.removeValue(forKey: ObjectIdentifier(handler)) != nil else { return }
    if handlers.isEmpty {
      scheduled?.cancel()
      scheduled = nil
    }
  }

  private func arm() {
    scheduled = eventLoop.assumeIsolated().scheduleTask(in: period) { self.visit() }
  }

  private func visit() {
    scheduled = nil
    let now = NIODeadline.now()
    // A check may close its connection, which leaves `handlers` meanwhile: the loop goes over
    // the dictionary as it was.
    for handler in handlers.values { handler.check(now: now) }
    if !handlers.isEmpty, scheduled == nil { arm() }
  }
}
