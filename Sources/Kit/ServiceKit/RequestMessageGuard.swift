import NIOCore
import NIOHTTP2

/// Answers a request message that the server will not take with a gRPC status, before
/// grpc-swift's stream handler sees it: a message over the server's size limit gets
/// `RESOURCE_EXHAUSTED` naming its size and the limit, a compressed-flag byte other than 0 or 1
/// gets `INTERNAL`. The stream then ends; the connection and its other streams are untouched.
///
/// **Why.** grpc-swift-nio-transport (2.9.2) detects both in its message decoder, but turns any
/// decode error into a stream reset (`RST_STREAM`, which clients report as `UNAVAILABLE` or
/// "cancelled" and which names nothing), and it reads any flag byte other than 1 as
/// "uncompressed".
///
/// **How.** It sits first in each HTTP/2 stream's pipeline (installed by
/// `GRPCServerService.hardenedConfig` through the transport's `onAcceptHTTP2Stream`), follows
/// the gRPC length-prefixed messages through the request's DATA frames (a 5-byte prefix — the
/// flag, then the big-endian length — may be split across frames), and checks each prefix as
/// soon as it is complete, before the message's bytes arrive. On a refusal it writes the status
/// itself (a trailers-only response, or trailers when the response has already started), drops
/// everything the client sends after, and closes the stream, which cancels the RPC. Since the
/// message never reaches the transport, the transport's own size limit (set to the same value)
/// is only a backstop.
///
/// **Unread responses.** With `maxUnsentMessages`, it also counts the response messages the
/// stream has written that HTTP/2 has not yet sent (their write has not completed: the
/// client's flow-control window is closed, or its connection does not drain), and resets the
/// stream when there are more than that. A client that stops reading then costs at most that
/// many messages, not everything sent until swift-nio-http2's 8 KiB per-stream watermark
/// (about 1,600 gateway pings, ~200 bytes of frames and promises each) blocks the writer.
final class RequestMessageGuard: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTP2Frame.FramePayload
  typealias OutboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private let maxMessageBytes: Int
  private let maxUnsentMessages: Int?
  /// Response messages written and not yet sent.
  private var unsent = 0
  /// The prefix of the next message, as far as it has arrived (at most 5 bytes).
  private var prefix: [UInt8] = []
  /// Bytes of the current message's body still to come.
  private var remainingBody = 0
  /// Whether the server has sent response headers: a refusal then sends trailers only.
  private var responseStarted = false
  private var refused = false

  init(maxMessageBytes: Int, maxUnsentMessages: Int? = nil) {
    self.maxMessageBytes = maxMessageBytes
    self.maxUnsentMessages = maxUnsentMessages
    prefix.reserveCapacity(5)
  }

  /// Puts a guard first in an accepted HTTP/2 stream's pipeline (on its event loop).
  static func install(
    on streamChannel: any Channel, maxMessageBytes: Int, maxUnsentMessages: Int?
  ) -> EventLoopFuture<Void> {
    streamChannel.eventLoop.makeCompletedFuture {
      try streamChannel.pipeline.syncOperations.addHandler(
        RequestMessageGuard(
          maxMessageBytes: maxMessageBytes, maxUnsentMessages: maxUnsentMessages),
        position: .first)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !refused else { return }  // the stream is ending: nothing more reaches gRPC
    let payload = unwrapInboundIn(data)
    if case .data(let frame) = payload, case .byteBuffer(let buffer) = frame.data,
      let refusal = scan(buffer)
    {
      refuse(context: context, refusal)
      return
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    switch unwrapOutboundIn(data) {
    case .headers:
      responseStarted = true
    case .data where maxUnsentMessages != nil:
      // Counted until HTTP/2 has sent it (its write completes then, or fails).
      let promise = promise ?? context.eventLoop.makePromise(of: Void.self)
      unsent += 1
      promise.futureResult.assumeIsolated().whenComplete { _ in self.unsent -= 1 }
      context.write(data, promise: promise)
      if let cap = maxUnsentMessages, unsent > cap {
        // The client does not read: reset the stream (a status could not reach it either,
        // trailers queue behind the unsent messages). The RPC is cancelled.
        context.close(promise: nil)
      }
      return
    default:
      break
    }
    context.write(data, promise: promise)
  }

  // MARK: Messages

  struct Refusal: Equatable {
    var status: Int
    var message: String
  }

  /// Follows the messages through `buffer`; the refusal of the first bad prefix, if any.
  func scan(_ buffer: ByteBuffer) -> Refusal? {
    var view = buffer.readableBytesView[...]
    while !view.isEmpty {
      if remainingBody > 0 {
        let skipped = min(remainingBody, view.count)
        remainingBody -= skipped
        view = view.dropFirst(skipped)
        continue
      }
      let needed = 5 - prefix.count
      prefix.append(contentsOf: view.prefix(needed))
      view = view.dropFirst(needed)
      guard prefix.count == 5 else { break }
      let flag = prefix[0]
      let length = prefix[1...4].reduce(0) { $0 << 8 | Int($1) }
      prefix.removeAll(keepingCapacity: true)
      if flag > 1 {
        return Refusal(
          status: 13,  // INTERNAL
          message: "invalid gRPC message: compressed-flag byte \(flag) is neither 0 nor 1")
      }
      if length > maxMessageBytes {
        return Refusal(
          status: 8,  // RESOURCE_EXHAUSTED
          message:
            "request message of \(length) bytes is over this server's limit of \(maxMessageBytes) bytes"
        )
      }
      remainingBody = length
    }
    return nil
  }

  private func refuse(context: ChannelHandlerContext, _ refusal: Refusal) {
    refused = true
    let headers = GRPCStatusTrailers.trailers(
      status: refusal.status, message: refusal.message, responseStarted: responseStarted)
    let trailers = HTTP2Frame.FramePayload.headers(.init(headers: headers, endStream: true))
    // Closing after the trailers (in order on the stream) cancels the RPC on our side; the
    // client has its status first.
    context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
    context.close(promise: nil)
  }

  static func percentEncoded(_ message: String) -> String {
    GRPCStatusTrailers.percentEncoded(message)
  }
}
