import CounterModel
import CounterProtos
import NIOCore
import NIOHPACK
import NIOHTTP2
import PresenceStore
import SwiftProtobuf
import Tracing

/// Answers `FetchOnlineUsersInLast3Mins` from the count cache on the HTTP/2 stream's event loop,
/// when the cache has an answer it may serve now (``CachedCount/cachedCount(sinceMillis:)``):
/// the same count, span and response as ``StatusReader``, without grpc-swift's hops.
///
/// **Why.** grpc-swift serves a unary call through a task per stream: the request's parts
/// reach the handler, and the response's parts reach the event loop, each through an async
/// sequence or writer, about ten hand-offs between the event loop and the cooperative pool
/// (20 context switches per call, traced with `perf sched`, issue 12). On a quiet machine that is
/// 0.5–0.9 ms for a count the cache holds in 134 ns; with the cores busy (ingest, the
/// database, other processes), every hand-off is a thread that must wait for a CPU, and the
/// tail grows with their number. Here a cached answer costs one wake-up of the event loop.
///
/// **How.** It sits in each HTTP/2 stream's pipeline before grpc-swift's stream handler
/// (installed through the transport's `onAcceptHTTP2Stream`, after ``RequestMessageGuard``,
/// which still checks sizes first). Another method's stream is passed on at its first frame
/// and the handler removes itself. A fetch's frames are held until the request has ended
/// (unary: HEADERS, one empty message, END_STREAM); then, if the request is a plain one (an
/// uncompressed message of at most ``maxRequestBytes``) and the cache can answer, it writes
/// the response itself; otherwise (no servable answer: the call must wait for a query; a
/// compressed or odd request) it passes the held frames on and grpc-swift serves the call as
/// before. Either way the call's answer is what ``StatusReader`` would give.
final class CachedFetchHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  static let path = "/tenten.interview.StatusReader/FetchOnlineUsersInLast3Mins"
  /// Largest request held; the request message is empty, so anything larger is odd and is
  /// left to grpc-swift.
  static let maxRequestBytes = 1024

  private static let responseHeaders: HPACKHeaders = [
    ":status": "200", "content-type": "application/grpc",
  ]
  private static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

  private enum State {
    /// Before the request headers.
    case idle
    /// A fetch: its frames so far, and their DATA bytes.
    case holding([HTTP2Frame.FramePayload], bytes: Int)
    /// Answered here; the stream ends.
    case answered
    /// Another method, or a fetch left to grpc-swift.
    case passing
  }

  private let cache: CachedCount
  private let clock: MillisClock
  private let tracer: any Tracer
  private var state = State.idle

  init(cache: CachedCount, clock: @escaping MillisClock, tracer: any Tracer) {
    self.cache = cache
    self.clock = clock
    self.tracer = tracer
  }

  /// Puts the handler first in an accepted HTTP/2 stream's pipeline (on its event loop); a
  /// handler installed first afterwards (``RequestMessageGuard``) goes before it.
  static func install(
    on streamChannel: any Channel, cache: CachedCount, clock: @escaping MillisClock,
    tracer: any Tracer
  ) -> EventLoopFuture<Void> {
    streamChannel.eventLoop.makeCompletedFuture {
      try streamChannel.pipeline.syncOperations.addHandler(
        CachedFetchHandler(cache: cache, clock: clock, tracer: tracer), position: .first)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let payload = unwrapInboundIn(data)
    switch state {
    case .idle:
      guard case .headers(let headers) = payload, Self.isPlainFetch(headers.headers),
        !headers.endStream
      else {
        pass(held: [payload], context: context)
        return
      }
      state = .holding([payload], bytes: 0)
    case .holding(var frames, var bytes):
      frames.append(payload)
      let ended: Bool
      switch payload {
      case .data(let data):
        bytes += data.data.readableBytes
        ended = data.endStream
      case .headers(let trailers):
        ended = trailers.endStream
      default:
        ended = false
      }
      guard bytes <= Self.maxRequestBytes else {
        pass(held: frames, context: context)
        return
      }
      guard ended else {
        state = .holding(frames, bytes: bytes)
        return
      }
      guard let count = answer(frames) else {
        pass(held: frames, context: context)
        return
      }
      state = .answered
      respond(count, context: context)
    case .answered:
      break  // the request has ended: nothing more comes but a reset, which closes the stream
    case .passing:
      context.fireChannelRead(data)
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    switch state {
    case .holding, .answered: break
    case .idle, .passing: context.fireChannelReadComplete()
    }
  }

  /// A POST of `path` as gRPC over protobuf, with no compression asked for.
  private static func isPlainFetch(_ headers: HPACKHeaders) -> Bool {
    guard headers.first(name: ":path") == path, headers.first(name: ":method") == "POST",
      let contentType = headers.first(name: "content-type"),
      contentType == "application/grpc" || contentType == "application/grpc+proto"
    else { return false }
    let encoding = headers.first(name: "grpc-encoding")
    return encoding == nil || encoding == "identity"
  }

  /// The count for a complete request (its frames), or `nil` when grpc-swift must serve it: a
  /// request that is not one uncompressed message, or no answer the cache may serve now.
  private func answer(_ frames: [HTTP2Frame.FramePayload]) -> UInt64? {
    var body = ByteBuffer()
    for case .data(let data) in frames {
      guard case .byteBuffer(var bytes) = data.data else { return nil }
      body.writeBuffer(&bytes)
    }
    // One length-prefixed message: flag 0 (uncompressed), length, the message's bytes (an
    // empty request; unknown fields, as protobuf allows, are ignored like grpc-swift does).
    guard let flag = body.readInteger(as: UInt8.self), flag == 0,
      let length = body.readInteger(as: UInt32.self), Int(length) == body.readableBytes
    else { return nil }
    return cache.cachedCount(sinceMillis: clock() - onlineWindowMillis)
  }

  private func respond(_ count: UInt64, context: ChannelHandlerContext) {
    // The span StatusReader makes for a call; the cache answered, so it has no store child.
    tracer.withSpan("status.fetch_online_users", ofKind: .server) { span in
      span.attributes["presence.online_users"] = Int(clamping: count)
      span.attributes["status.answered_on"] = "event_loop"
    }
    let message = Tenten_Interview_FetchOnlineUsersInLast3MinsResponse.with {
      $0.onlineUsers = count
    }
    // A UInt64 field encodes in at most 11 bytes: serializing it cannot fail.
    let bytes: [UInt8] = (try? message.serializedBytes()) ?? []
    var buffer = context.channel.allocator.buffer(capacity: 5 + bytes.count)
    buffer.writeInteger(UInt8(0))
    buffer.writeInteger(UInt32(bytes.count))
    buffer.writeBytes(bytes)
    context.write(
      wrapOutboundOut(.headers(.init(headers: Self.responseHeaders))), promise: nil)
    context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(buffer)))), promise: nil)
    context.writeAndFlush(
      wrapOutboundOut(.headers(.init(headers: Self.okTrailers, endStream: true))), promise: nil)
  }

  /// Hands the stream to grpc-swift: the held frames first, then everything after; the handler
  /// leaves the pipeline.
  private func pass(held frames: [HTTP2Frame.FramePayload], context: ChannelHandlerContext) {
    state = .passing
    for frame in frames {
      context.fireChannelRead(wrapInboundOut(frame))
    }
    context.fireChannelReadComplete()
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }
}
