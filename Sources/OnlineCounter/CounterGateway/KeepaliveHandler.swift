import NIOCore
import NIOHTTP2

/// HTTP/2 keepalive without a timer operation per read: after `interval` with nothing read,
/// the server sends a PING, and closes the connection unless something (the ack, or anything
/// else) is read within `timeout`.
///
/// It sits after `NIOHTTP2Handler`, so "read" means connection-level frames (PING, SETTINGS,
/// WINDOW_UPDATE on stream 0): stream frames go to the stream channels. So a busy connection
/// is pinged every `interval` too (one PING and its ack per 30 s: at 10,000 connections,
/// ~330 a second, in the measured CPU), which also proves the peer alive at the HTTP/2 level.
///
/// **Why not `NIOHTTP2ServerConnectionManagementHandler`'s keepalive.** It restarts its timer
/// at the end of every read, i.e. cancels a scheduled task and schedules another, and NIO
/// finds a cancelled task in its event loop's heap by a linear search: with 10,000
/// connections of one `Connect` stream each, that search was 11% of the gateway's CPU
/// (`perf`, 10,000 clients on 10,000 connections). Here each read only notes the time; the
/// one timer per connection is re-armed when it fires, never cancelled before the connection
/// closes.
final class KeepaliveHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let interval: TimeAmount
  private let timeout: TimeAmount
  private var lastRead = NIODeadline.now()
  private var timer: Scheduled<Void>?
  /// Sent and not yet answered (by anything read since).
  private var pingSentAt: NIODeadline?
  private let pingData = HTTP2PingData(withInteger: .random(in: .min ... .max))

  init(interval: TimeAmount, timeout: TimeAmount) {
    self.interval = interval
    self.timeout = timeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    arm(at: .now() + interval, context: context)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    lastRead = .now()
    context.fireChannelRead(data)
  }

  private func arm(at deadline: NIODeadline, context: ChannelHandlerContext) {
    timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
      self.fired(context: context)
    }
  }

  private func fired(context: ChannelHandlerContext) {
    let now = NIODeadline.now()
    if let sent = pingSentAt, lastRead < sent {
      // Nothing read since the ping, within the timeout: the peer is gone.
      context.close(promise: nil)
      return
    }
    pingSentAt = nil
    if now - lastRead >= interval {
      pingSentAt = now
      let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(pingData, ack: false))
      context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
      arm(at: now + timeout, context: context)
    } else {
      arm(at: lastRead + interval, context: context)
    }
  }
}
