public import NIOCore
import NIOHTTP2

/// Hands the HTTP/2 handler its bytes cut where its frame decoder keeps no partial state but
/// a DATA frame's payload: a read never ends inside a frame header or inside any other frame.
///
/// **Why.** swift-nio-http2's frame decoder (1.x) appends each read to one buffer and hands
/// DATA payloads on as slices of it. When a read ends inside a frame header (or inside a
/// non-DATA frame), the unread bytes stay in that buffer, and the next append, finding the
/// storage still shared with slices handed on, copies the whole buffer (read bytes included)
/// into one of twice its capacity. Those capacities never shrink, and every later read is
/// copied into a new buffer of the grown size. A client whose stream is not being read keeps
/// its DATA frames pending, each holding one of those buffers alive: `jobctl logs` with its
/// standard output blocked held 20–45 MiB with 255 KiB messages (heaptrack: buffers of 1–4
/// MiB pinned by DATA frames of 16–255 KiB), and a streaming one copied megabytes per read.
///
/// **What.** Bytes that start a frame header or a non-DATA frame that the read does not
/// complete are kept here (at most one frame: 9 bytes of header, or a control frame, which is
/// small) and handed on with the read that completes them. Everything else is handed on as a
/// slice of the read, uncopied, so the decoder's buffer is empty at the end of every read and
/// its capacity stays that of one read. A DATA frame's payload may still be cut anywhere: the
/// decoder hands on partial DATA frames and keeps nothing of them.
///
/// Frames longer than ``maximumFrameLength`` (more than the peer may send) are not held: from
/// there on every byte is passed through unchanged, and the HTTP/2 handler rejects the frame
/// (`FRAME_SIZE_ERROR`) exactly as it would without this handler.
public final class HTTP2FrameAligner: ChannelInboundHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer
  public typealias InboundOut = ByteBuffer

  enum State {
    /// At a frame boundary, or inside a frame header whose first bytes are in `held`.
    case header
    /// Inside the payload of an unpadded DATA frame: `remaining` bytes of it to come.
    case dataPayload(remaining: Int)
    /// Inside a non-DATA (or padded) frame: `remaining` bytes of it to come, the rest in
    /// `held`.
    case wholeFrame(remaining: Int)
    /// A frame over the limit was announced: bytes are no longer looked at.
    case passThrough
  }

  /// The longest frame (payload) held back: larger ones are left to the HTTP/2 handler to
  /// refuse. The value advertised as `SETTINGS_MAX_FRAME_SIZE`.
  public let maximumFrameLength: Int
  /// The most bytes handed on in one read (a whole frame longer than this goes alone): what
  /// bounds the decoder's buffer, and so what each pending DATA frame can hold alive.
  public let maximumReadLength: Int
  private var state = State.header
  /// Bytes of a frame header or of a whole frame not yet complete; empty between frames.
  private var held = ByteBuffer()

  public init(maximumFrameLength: Int, maximumReadLength: Int = 16 * 1024) {
    precondition(maximumReadLength > 0, "a read hands on at least one byte")
    self.maximumFrameLength = maximumFrameLength
    self.maximumReadLength = maximumReadLength
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var input = Self.unwrapInboundIn(data)
    if case .passThrough = state {
      context.fireChannelRead(data)
      return
    }
    // First complete what is held, copying from this read only the bytes it lacks.
    if held.readableBytes > 0 {
      guard completeHeld(from: &input, context: context) else { return }
    }
    forward(input, context: context)
  }

  /// Hands on `input` in slices of at most ``maximumReadLength`` bytes (or one whole frame,
  /// where a frame is longer), each ending at a frame boundary or inside a DATA payload; keeps
  /// what ends inside a frame header or another frame.
  private func forward(_ input: ByteBuffer, context: ChannelHandlerContext) {
    let count = input.readableBytes
    var start = 0  // the first byte not handed on yet
    var offset = 0  // the first byte not looked at yet
    func handOn(upTo end: Int) {
      guard end > start,
        let slice = input.getSlice(at: input.readerIndex + start, length: end - start)
      else { return }
      context.fireChannelRead(Self.wrapInboundOut(slice))
      start = end
    }
    scan: while offset < count {
      if offset - start >= maximumReadLength { handOn(upTo: offset) }
      switch state {
      case .passThrough:
        break scan
      case .dataPayload(let remaining):
        let taken = min(remaining, count - offset, maximumReadLength - (offset - start))
        offset += taken
        state = remaining == taken ? .header : .dataPayload(remaining: remaining - taken)
      case .wholeFrame:
        // Not reached: a frame found below is consumed or held at once, and one continued
        // from an earlier read is completed by `completeHeld` first. Were it reached, every
        // byte still reaches the HTTP/2 handler, only without the alignment.
        assertionFailure("an incomplete frame outside completeHeld")
        state = .passThrough
        break scan
      case .header:
        guard let header = HTTP2FrameHeader(input, at: input.readerIndex + offset) else {
          break scan  // a header split by the read: held
        }
        enter(header)
        guard case .wholeFrame = state else {
          offset += HTTP2FrameHeader.length  // a DATA payload follows, or nothing is held
          continue
        }
        // Any other frame goes on whole, and not added to a slice it would make too long.
        if offset > start, offset - start + header.frameLength > maximumReadLength {
          handOn(upTo: offset)
        }
        guard count - offset >= header.frameLength else {
          // Incomplete: held from its header on.
          state = .wholeFrame(remaining: header.frameLength - (count - offset))
          break scan
        }
        offset += header.frameLength
        state = .header
      }
    }
    if case .passThrough = state {
      handOn(upTo: count)
      return
    }
    // `offset` is where held bytes start, if any: a partial header or an incomplete frame.
    let heldFrom: Int
    switch state {
    case .header, .wholeFrame: heldFrom = offset
    case .dataPayload, .passThrough: heldFrom = count
    }
    handOn(upTo: heldFrom)
    if heldFrom < count,
      var rest = input.getSlice(at: input.readerIndex + heldFrom, length: count - heldFrom)
    {
      held.writeBuffer(&rest)
    }
  }

  /// Moves bytes from `input` into `held` until the held header or frame is complete; hands it
  /// on then. Returns `false` when `input` ran out first (everything it had is now held).
  private func completeHeld(from input: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
    switch state {
    case .header:
      let needed = HTTP2FrameHeader.length - held.readableBytes
      guard var bytes = input.readSlice(length: min(needed, input.readableBytes)) else {
        return false
      }
      held.writeBuffer(&bytes)
      guard let header = HTTP2FrameHeader(held, at: held.readerIndex) else { return false }
      enter(header)
      if case .wholeFrame = state {
        // Keep the header with the frame's payload; the payload's bytes follow below.
        return completeHeld(from: &input, context: context)
      }
    case .wholeFrame(let remaining):
      guard var bytes = input.readSlice(length: min(remaining, input.readableBytes)) else {
        return false
      }
      let left = remaining - bytes.readableBytes
      held.writeBuffer(&bytes)
      guard left == 0 else {
        state = .wholeFrame(remaining: left)
        return false
      }
      state = .header
    case .dataPayload, .passThrough:
      break
    }
    // The held bytes are whole now: a header that starts a DATA frame (or one over the
    // limit), or a whole frame. A fresh buffer each time: the one handed on is the decoder's.
    let whole = held
    held = ByteBuffer()
    context.fireChannelRead(Self.wrapInboundOut(whole))
    return true
  }

  /// The state at the end of a frame's header.
  private func enter(_ header: HTTP2FrameHeader) {
    if header.payloadLength > maximumFrameLength {
      state = .passThrough
    } else if header.type == HTTP2FrameHeader.dataType
      && header.flags & HTTP2FrameHeader.paddedFlag == 0
    {
      state = header.payloadLength == 0 ? .header : .dataPayload(remaining: header.payloadLength)
    } else {
      state = .wholeFrame(remaining: header.payloadLength)
    }
  }
}

extension ChannelPipeline.SynchronousOperations {
  /// Adds an ``HTTP2FrameAligner`` just before the channel's `NIOHTTP2Handler` (after TLS,
  /// where there is TLS). Call on the channel's event loop, after the HTTP/2 pipeline is
  /// configured.
  public func addHTTP2FrameAligner(maximumFrameLength: Int, maximumReadLength: Int) throws {
    let http2 = try handler(type: NIOHTTP2Handler.self)
    try addHandler(
      HTTP2FrameAligner(
        maximumFrameLength: maximumFrameLength, maximumReadLength: maximumReadLength),
      position: .before(http2))
  }
}
