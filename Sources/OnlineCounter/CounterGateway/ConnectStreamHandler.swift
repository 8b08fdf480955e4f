import CounterProtos
import GRPCCore
import GRPCInProcessTransport
import NIOCore
import NIOHPACK
import NIOHTTP2
import ServiceKit
import SwiftProtobuf

/// Serves one `Connect` call on one HTTP/2 stream, on the stream's event loop, with no task:
/// the gateway's ping timer writes each due ping here (``PingSink``), pongs are handled as
/// they are read, and the call ends with trailers whoever decides it (the gateway: pong
/// timeout, flood, drain; or the client: half-close, reset, a bad message).
///
/// It is what a stream costs besides swift-nio-http2's own state: this handler, a
/// ``ClientSession`` in the scheduler, the span. Compare grpc-swift's per-stream tasks, async
/// sequences and writers (see `docs/benchmarks.md`).
///
/// A call for any other method (health, reflection) is handed to an ``InProcessCallHandler``
/// that takes this handler's place in the stream's pipeline, when the listener serves other
/// methods; otherwise it is answered `UNIMPLEMENTED`.
final class ConnectStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  static let path = "/tenten.interview.Gateway/Connect"

  /// The limits a stream is served under.
  struct Limits: Sendable {
    /// Largest pong accepted (its 5-byte prefix is checked before the body is buffered).
    var maxMessageBytes = 1024
    /// Pings written but not yet sent by HTTP/2 (the client stopped reading) before the
    /// stream is reset.
    var maxUnsentPings = 8
  }

  /// The ping scheduler's slot of every stream of this handler's connection: all of a
  /// connection's pings are due on the same tick, so they leave in one write (one system
  /// call) a second rather than one each, and the connections spread the load over the
  /// second instead of the users.
  private let slot: Int

  private enum State {
    /// Before the request headers.
    case idle
    /// Admitted: ``stream`` is set.
    case open
    /// Trailers sent (or the stream reset); nothing more is read or written.
    case ended
    /// Another method: the stream is served by the handler after this one.
    case routed
  }

  private let gateway: Gateway
  private let limits: Limits
  /// Where calls for other methods go.
  private let otherMethods: InProcessTransport.Client?
  private var state = State.idle
  /// The admitted stream, while ``state`` is `open`; kept apart from the state so that a read
  /// touches only the session (a `State` with the stream in it was copied, span and all, on
  /// every frame).
  private var stream: ConnectStream?
  private var reader: GRPCMessageReader
  /// Pings written whose write has not completed.
  private var unsent = 0
  private var context: ChannelHandlerContext?
  /// A ping message: an empty `Ping`, i.e. a 5-byte prefix of zeros, shared by every stream.
  private static let pingMessage = ByteBuffer(bytes: [0, 0, 0, 0, 0])
  private static let responseHeaders: HPACKHeaders = [
    ":status": "200", "content-type": "application/grpc",
  ]

  init(
    gateway: Gateway, limits: Limits, slot: Int = 0,
    otherMethods: InProcessTransport.Client? = nil
  ) {
    self.gateway = gateway
    self.slot = slot
    self.limits = limits
    self.otherMethods = otherMethods
    self.reader = GRPCMessageReader(maxMessageBytes: limits.maxMessageBytes)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch (unwrapInboundIn(data), state) {
    case (_, .routed):
      context.fireChannelRead(data)
    case (.headers(let headers), .idle):
      if let otherMethods, headers.headers.first(name: ":path") != Self.path {
        route(to: otherMethods, data, context: context)
        return
      }
      open(headers.headers, context: context)
      if headers.endStream, case .open = state { clientLeft(context: context) }
    case (.headers(let trailers), .open) where trailers.endStream:
      clientLeft(context: context)
    case (.data(let data), .open):
      guard case .byteBuffer(let bytes) = data.data, let session = stream?.session else { return }
      reader.append(bytes)
      readPongs(session, context: context)
      if data.endStream, case .open = state { clientLeft(context: context) }
    case (.data, .idle), (.headers, .open):
      finish(context: context, status: 13, message: "malformed gRPC request")
    default:
      break  // window updates, priorities; anything after the end
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    // The stream closed: reset by the client, its connection gone, or our own close after
    // the trailers.
    if case .open = state, let stream {
      state = .ended
      self.stream = nil
      stream.session.taskEnded(CancellationError())
      gateway.streamEnded(stream)
    }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }

  // MARK: Opening

  /// Puts an ``InProcessCallHandler`` in this handler's place and passes it the headers.
  private func route(
    to transport: InProcessTransport.Client, _ headers: NIOAny, context: ChannelHandlerContext
  ) {
    state = .routed
    do {
      try context.pipeline.syncOperations.addHandler(
        InProcessCallHandler(transport: transport, maxMessageBytes: limits.maxMessageBytes),
        position: .after(self))
    } catch {
      context.close(promise: nil)
      return
    }
    context.fireChannelRead(headers)
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }

  private func open(_ headers: HPACKHeaders, context: ChannelHandlerContext) {
    guard headers.first(name: ":method") == "POST",
      headers.first(name: "content-type")?.hasPrefix("application/grpc") == true
    else {
      // Not gRPC: an HTTP error, as grpc-swift answers it.
      var response: HPACKHeaders = [":status": "415"]
      response.add(name: "grpc-status", value: "13")
      write(response, endStream: true, context: context)
      return
    }
    guard headers.first(name: ":path") == Self.path else {
      finish(
        context: context, status: 12,
        message: "Unimplemented method '\(headers.first(name: ":path") ?? "")'")
      return
    }
    let loop = NIOLoopBound(self, eventLoop: context.eventLoop)
    let sink = PingSink(
      eventLoop: context.eventLoop, ping: { loop.value.ping() }, end: { loop.value.sessionEnded() })
    switch gateway.openStream(metadata: Self.metadata(headers), slot: slot, sink: sink) {
    case .failure(let error):
      finish(context: context, status: error.code.rawValue, message: error.message)
    case .success(let stream):
      state = .open
      self.stream = stream
      context.write(
        wrapOutboundOut(.headers(.init(headers: Self.responseHeaders))), promise: nil)
      ping()  // the first ping at once, not on the slot
    }
  }

  /// The request's custom metadata (no pseudo-headers), for the id and the trace context.
  static func metadata(_ headers: HPACKHeaders) -> Metadata {
    var metadata = Metadata()
    for (name, value, _) in headers where !name.hasPrefix(":") {
      metadata.addString(value, forKey: name)
    }
    return metadata
  }

  // MARK: Pongs

  private func readPongs(_ session: ClientSession, context: ChannelHandlerContext) {
    do {
      while let message = try reader.next() {
        let status: Tenten_Interview_Status
        if let canonical = Self.canonicalPongStatus(message) {
          status = canonical
        } else {
          do {
            status = try Tenten_Interview_Pong(serializedBytes: Array(message.readableBytesView))
              .status
          } catch {
            finish(context: context, status: 13, message: "could not parse a Pong: \(error)")
            return
          }
        }
        guard gateway.pongReceived(status, on: session) else {
          return  // flooded: the session is closed, and its end sends the status
        }
      }
    } catch {
      finish(context: context, status: error.status, message: error.message)
    }
  }

  /// The status of a `Pong` in the encoding every client sends (field 1 as a one-byte varint,
  /// or nothing for the default), read without allocating; `nil` for any other encoding,
  /// which SwiftProtobuf decodes (unknown fields, repeated or multi-byte values, garbage).
  static func canonicalPongStatus(_ message: ByteBuffer) -> Tenten_Interview_Status? {
    switch message.readableBytes {
    case 0:
      return .unknown
    case 2:
      guard message.getInteger(at: message.readerIndex, as: UInt8.self) == 0x08,  // field 1, varint
        let value = message.getInteger(at: message.readerIndex + 1, as: UInt8.self), value < 0x80
      else { return nil }
      return Tenten_Interview_Status(rawValue: Int(value))
    default:
      return nil
    }
  }

  private func clientLeft(context: ChannelHandlerContext) {
    guard case .open = state, let stream else { return }
    // The client ended its side: it is leaving. OK.
    stream.session.taskEnded(nil)
    finish(context: context, status: 0, message: nil)
  }

  // MARK: Pings and the end

  /// Writes one ping (from the scheduler's batch, or the first one): flushed, and counted
  /// until HTTP/2 has sent it.
  private func ping() {
    guard case .open = state, let context else { return }
    unsent += 1
    let promise = context.eventLoop.makePromise(of: Void.self)
    promise.futureResult.assumeIsolated().whenComplete { _ in self.unsent -= 1 }
    let frame = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(Self.pingMessage)))
    context.writeAndFlush(wrapOutboundOut(frame), promise: promise)
    if unsent > limits.maxUnsentPings {
      // The client does not read: reset the stream (trailers would queue behind the pings).
      if case .open = state, let stream {
        stream.session.close(
          RPCError(code: .resourceExhausted, message: "the client does not read its pings"))
      }
      context.close(promise: nil)
    }
  }

  /// The session ended (the scheduler's timeout, a flood, the drain, or this handler itself).
  private func sessionEnded() {
    guard case .open = state, let stream, let context else { return }
    if let error = stream.session.endError as? RPCError {
      finish(context: context, status: error.code.rawValue, message: error.message)
    } else {
      finish(context: context, status: 0, message: nil)
    }
  }

  /// Ends the call with `status`: trailers (or a trailers-only response); the stream closes
  /// when the client ends its side, or after ``closeGrace``.
  private func finish(context: ChannelHandlerContext, status: Int, message: String?) {
    let started: Bool
    switch state {
    case .ended, .routed: return
    case .idle: started = false
    case .open:
      started = true
      if let stream {
        if status != 0 {
          let code = Status.Code(rawValue: status).flatMap(RPCError.Code.init) ?? .unknown
          stream.session.taskEnded(RPCError(code: code, message: message ?? ""))
        }
        gateway.streamEnded(stream)
      }
    }
    state = .ended
    stream = nil
    let trailers = GRPCStatusTrailers.trailers(
      status: status, message: message, responseStarted: started)
    write(trailers, endStream: true, context: context)
  }

  private func write(_ headers: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
    state = .ended
    context.writeAndFlush(
      wrapOutboundOut(.headers(.init(headers: headers, endStream: endStream))), promise: nil)
    // The client ends its side once it has the status (gRPC clients send END_STREAM or reset
    // the stream), which closes this channel. Resetting it here at once would make the pongs
    // it sent meanwhile arrive on a stream swift-nio-http2 has forgotten (it remembers the 32
    // last reset streams of a connection), each one a "glitch", 200 of which close the whole
    // connection. A client that never ends its side is reset after a grace period.
    context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeGrace) {
      context.close(promise: nil)
    }
  }

  /// How long a call's stream may stay open after its status, for the client to end it.
  static let closeGrace = TimeAmount.seconds(5)
}
