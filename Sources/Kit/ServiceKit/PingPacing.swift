import ConnectionKit
public import NIOCore
import NIOHTTP2

/// Paces a client's HTTP/2 PING frames before swift-nio-http2 counts them, so that clients
/// that probe their flow-control window with pings (grpc-go and grpc-java by default) are
/// served, while a ping flood is still refused.
///
/// **Why.** `NIOHTTP2Handler` closes a connection (GOAWAY `ENHANCE_YOUR_CALM`) that receives
/// more than 200 PING, SETTINGS, PRIORITY, ALTSVC or ORIGIN frames in 30 s, a limit that
/// grpc-swift-nio-transport 2.9.2 does not let us configure. grpc-go's BDP estimator sends a
/// PING whenever a DATA frame arrives and none of its pings is awaiting an ack, so on
/// loopback or a LAN it pings about once per message it receives: a grpc-go connection that
/// carries more than about 6 gateway streams (each pinged every second) was closed after
/// 200 / (streams per second) seconds. grpc-java's BDP pinger behaves the same way; C-core
/// (grpcio) backs its probes off to one every few seconds and is not affected.
///
/// **How.** Placed between the socket (or TLS) and the HTTP/2 handler, it finds the frame
/// boundaries in the inbound bytes and lets PING frames (not ACKs) through at most once per
/// ``Configuration/interval``, holding a ping that comes sooner until its turn. A client that
/// waits for an ack before its next ping, as every BDP estimator and keepalive does, is thereby
/// slowed to that rate instead of being disconnected: 250 ms gives at most 121 pings per 30 s,
/// and leaves 79 of the 200 frames for SETTINGS (grpc-go sends one per window change), PING
/// acks to our keepalive and PRIORITY. A client that does not wait (a flood) overflows the
/// ``Configuration/maxHeld`` pings held back: every ping past those goes through at once and
/// counts against swift-nio-http2's limit, which closes the connection as before. Held pings
/// cost 17 bytes each; the ack to a held ping is late by at most
/// `maxHeld × interval`, far below any client's keepalive timeout (20 s by default in grpc-go,
/// grpc-java and C-core). PING acks and every other frame pass through untouched and in order.
///
/// The trade-off: a BDP estimator measures a round trip of up to `interval` instead of the real
/// one, so it may grant the server a larger window than needed (grpc-go caps it at 16 MiB);
/// that buffers more at the client, never at the server.
final class PingPacingHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  /// How pings are paced.
  struct Configuration: Sendable {
    /// The least time between two pings passed to the HTTP/2 handler.
    var interval: TimeAmount = .milliseconds(250)
    /// Pings held back at once; past this, pings are not paced (see the type's documentation).
    var maxHeld = 4
  }

  private let configuration: Configuration
  private var splitter = HTTP2PingSplitter()
  /// Small: most connections never hold a ping (NIO's default capacity is 16, per connection).
  private var held = CircularBuffer<ByteBuffer>(initialCapacity: 1)
  /// When the next ping may be passed on.
  private var nextRelease = NIODeadline.uptimeNanoseconds(0)
  private var timer: Scheduled<Void>?
  /// A held ping is due but the bytes passed on so far end inside a frame: pass it on at the
  /// next frame boundary.
  private var releaseAtBoundary = false

  init(configuration: Configuration = Configuration()) {
    self.configuration = configuration
  }

  /// Adds a pacer in front of the connection's HTTP/2 handler (behind TLS, if any). Meant for
  /// `HTTP2ServerTransport.Config.ChannelDebuggingCallbacks.onAcceptTCPConnection`, which runs
  /// once the gRPC pipeline is configured and before the connection is read from.
  static func install(
    on channel: any Channel, configuration: Configuration = Configuration()
  ) -> EventLoopFuture<Void> {
    channel.eventLoop.submit {
      try channel.pipeline.syncOperations.addPingPacing(configuration: configuration)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var input = unwrapInboundIn(data)
    while let piece = splitter.next(from: &input, stopAtFrameEnd: releaseAtBoundary) {
      switch piece {
      case .bytes(let bytes): context.fireChannelRead(wrapInboundOut(bytes))
      case .ping(let ping): received(ping: ping, context: context)
      }
      if releaseAtBoundary, splitter.atFrameBoundary {
        releaseAtBoundary = false
        releaseOne(context: context)
      }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    stop()
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    stop()
  }

  private func stop() {
    timer?.cancel()
    timer = nil
    held.removeAll()
    releaseAtBoundary = false
  }

  private func received(ping: ByteBuffer, context: ChannelHandlerContext) {
    let now = context.eventLoop.now
    if held.isEmpty, now >= nextRelease {
      nextRelease = now + configuration.interval
      context.fireChannelRead(wrapInboundOut(ping))
    } else if held.count < configuration.maxHeld {
      held.append(ping)
      scheduleRelease(context: context)
    } else {
      // More pings in flight than any client that waits for its acks sends: not paced, so
      // that swift-nio-http2's own limit counts them and closes a flood.
      context.fireChannelRead(wrapInboundOut(ping))
    }
  }

  private func scheduleRelease(context: ChannelHandlerContext) {
    guard timer == nil, !held.isEmpty else { return }
    timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: nextRelease) {
      self.timer = nil
      if self.splitter.atFrameBoundary {
        self.releaseOne(context: context)
        // Outside a read: let the HTTP/2 handler flush the ack now.
        context.fireChannelReadComplete()
      } else {
        self.releaseAtBoundary = true
      }
    }
  }

  private func releaseOne(context: ChannelHandlerContext) {
    guard let ping = held.popFirst() else { return }
    nextRelease = context.eventLoop.now + configuration.interval
    context.fireChannelRead(wrapInboundOut(ping))
    scheduleRelease(context: context)
  }
}

extension ChannelPipeline.SynchronousOperations {
  /// Adds a ``PingPacingHandler`` right in front of the pipeline's `NIOHTTP2Handler` (behind
  /// TLS, if any), for servers that build their HTTP/2 pipeline themselves.
  public func addPingPacing() throws {
    try addPingPacing(configuration: PingPacingHandler.Configuration())
  }

  func addPingPacing(configuration: PingPacingHandler.Configuration) throws {
    let http2 = try handler(type: NIOHTTP2Handler.self)
    try addHandler(PingPacingHandler(configuration: configuration), position: .before(http2))
  }
}

/// Splits the bytes a client sends on an HTTP/2 connection (the preface, then frames) into
/// runs of bytes to pass on unchanged and whole PING frames (not ACKs), without copying
/// anything but a frame header or PING split across reads.
struct HTTP2PingSplitter {
  enum Piece: Equatable {
    /// Bytes to pass on as they are (any number of frames, or part of one).
    case bytes(ByteBuffer)
    /// One whole PING frame without the ACK flag: its 9-byte header and 8-byte payload.
    case ping(ByteBuffer)
  }

  private enum State {
    /// Inside the 24-byte client connection preface.
    case preface(remaining: Int)
    /// At the start of a frame; nothing of it seen yet.
    case frameStart
    /// The first bytes of a frame header that a read split, held back.
    case header(ByteBuffer)
    /// Passing on the payload of a frame that is not a PING.
    case payload(remaining: Int)
    /// A PING frame that a read split, held back.
    case ping(ByteBuffer)
  }

  static let prefaceLength = 24
  static let headerLength = HTTP2FrameHeader.length
  static let pingLength = headerLength + 8

  private var state = State.preface(remaining: prefaceLength)

  /// Whether the bytes passed on so far end at a frame boundary, where a held PING can be
  /// passed on without cutting a frame in two.
  var atFrameBoundary: Bool {
    switch state {
    case .frameStart, .header, .ping: true
    case .preface, .payload: false
    }
  }

  /// The next piece of `input`, consuming it; `nil` once `input` is empty (bytes of a split
  /// header or PING are then held until the next call). With `stopAtFrameEnd`, a run of bytes
  /// ends at the first frame boundary, so that the caller can insert a held PING there.
  mutating func next(from input: inout ByteBuffer, stopAtFrameEnd: Bool) -> Piece? {
    // `input` as it came: its readable bytes are the ones a run of bytes is cut from.
    let original = input
    // Where the run of bytes to pass on begins: after any bytes taken into a held header or
    // PING.
    var start = input.readerIndex
    while input.readableBytes > 0 {
      switch state {
      case .preface(let remaining), .payload(let remaining):
        let count = min(remaining, input.readableBytes)
        input.moveReaderIndex(forwardBy: count)
        if count < remaining {
          state = Self.resume(state, remaining: remaining - count)
        } else {
          state = .frameStart
          if stopAtFrameEnd {
            return .bytes(Self.slice(original, from: start, upTo: input.readerIndex))
          }
        }

      case .frameStart:
        guard input.readableBytes >= Self.headerLength else {
          // A header split across reads: pass on what precedes it, then hold it.
          if input.readerIndex > start {
            return .bytes(Self.slice(original, from: start, upTo: input.readerIndex))
          }
          state = .header(input.readSlice(length: input.readableBytes)!)
          return nil
        }
        let header = HTTP2FrameHeader(input, at: input.readerIndex)!
        if Self.isPing(header) {
          if input.readerIndex > start {
            return .bytes(Self.slice(original, from: start, upTo: input.readerIndex))
          }
          guard input.readableBytes >= Self.pingLength else {
            state = .ping(input.readSlice(length: input.readableBytes)!)
            return nil
          }
          return .ping(input.readSlice(length: Self.pingLength)!)
        }
        input.moveReaderIndex(forwardBy: Self.headerLength)
        state = header.payloadLength > 0 ? .payload(remaining: header.payloadLength) : .frameStart
        if header.payloadLength == 0, stopAtFrameEnd {
          return .bytes(Self.slice(original, from: start, upTo: input.readerIndex))
        }

      case .header(var partial):
        // Only ever at the start of a call: the held bytes come first.
        start = Self.fill(&partial, to: Self.headerLength, from: &input)
        guard partial.readableBytes == Self.headerLength else {
          state = .header(partial)
          return nil
        }
        let header = HTTP2FrameHeader(partial, at: partial.readerIndex)!
        if Self.isPing(header) {
          state = .ping(partial)
        } else {
          state = header.payloadLength > 0 ? .payload(remaining: header.payloadLength) : .frameStart
          return .bytes(partial)
        }

      case .ping(var partial):
        start = Self.fill(&partial, to: Self.pingLength, from: &input)
        guard partial.readableBytes == Self.pingLength else {
          state = .ping(partial)
          return nil
        }
        state = .frameStart
        return .ping(partial)
      }
    }
    return input.readerIndex > start
      ? .bytes(Self.slice(original, from: start, upTo: input.readerIndex)) : nil
  }

  private static func resume(_ state: State, remaining: Int) -> State {
    if case .preface = state { return .preface(remaining: remaining) }
    return .payload(remaining: remaining)
  }

  /// The bytes of `original` (a read as it came) from `start` to `end`.
  /// Moves bytes from `input` into `partial` until it holds `length` (or `input` is empty);
  /// returns `input`'s reader index after them.
  private static func fill(
    _ partial: inout ByteBuffer, to length: Int, from input: inout ByteBuffer
  ) -> Int {
    let count = min(length - partial.readableBytes, input.readableBytes)
    partial.writeImmutableBuffer(input.readSlice(length: count)!)
    return input.readerIndex
  }

  private static func slice(_ original: ByteBuffer, from start: Int, upTo end: Int) -> ByteBuffer {
    original.getSlice(at: start, length: end - start)!
  }

  /// Whether `header` starts a PING that is not an ACK. Only a well-formed one is held; a
  /// malformed one goes straight to the HTTP/2 handler, which refuses it.
  private static func isPing(_ header: HTTP2FrameHeader) -> Bool {
    header.type == HTTP2FrameHeader.pingType && header.flags & HTTP2FrameHeader.ackFlag == 0
      && header.payloadLength == 8 && header.streamID == 0
  }
}
