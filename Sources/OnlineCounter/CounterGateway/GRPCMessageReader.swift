import NIOCore

/// Cuts gRPC length-prefixed messages (a flag byte, a 4-byte big-endian length, the message)
/// out of a request's DATA frames, which may split a message or carry several. A prefix over
/// the size limit or with a flag byte other than 0 is refused as soon as its 5 bytes are in,
/// before the message's bytes are buffered.
struct GRPCMessageReader {
  /// A message the reader will not take, with the gRPC status that says why.
  struct Refusal: Error, Equatable {
    var status: Int
    var message: String
  }

  static let prefixLength = 5

  private let maxMessageBytes: Int
  /// Bytes received and not yet cut into messages; empty most of the time (a frame usually
  /// holds whole messages).
  private var pending = ByteBuffer()

  init(maxMessageBytes: Int) {
    self.maxMessageBytes = maxMessageBytes
  }

  mutating func append(_ bytes: ByteBuffer) {
    if pending.readableBytes == 0 {
      pending = bytes
    } else {
      pending.writeImmutableBuffer(bytes)
    }
  }

  /// The next whole message, `nil` until one is complete.
  mutating func next() throws(Refusal) -> ByteBuffer? {
    guard let flag = pending.getInteger(at: pending.readerIndex, as: UInt8.self),
      let length = pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self)
    else { return nil }
    switch flag {
    case 0: break
    case 1:
      // Nothing was negotiated: `grpc-accept-encoding` is not sent, so a client has no
      // encoding to compress with.
      throw Refusal(
        status: 12,  // UNIMPLEMENTED
        message: "compressed request messages are not supported by this server")
    default:
      throw Refusal(
        status: 13,  // INTERNAL
        message: "invalid gRPC message: compressed-flag byte \(flag) is neither 0 nor 1")
    }
    guard length <= maxMessageBytes else {
      throw Refusal(
        status: 8,  // RESOURCE_EXHAUSTED
        message:
          "request message of \(length) bytes is over this server's limit of \(maxMessageBytes) bytes"
      )
    }
    guard pending.readableBytes >= Self.prefixLength + Int(length) else { return nil }
    pending.moveReaderIndex(forwardBy: Self.prefixLength)
    let message = pending.readSlice(length: Int(length))!
    if pending.readableBytes == 0 { pending = ByteBuffer() }  // let go of the frame's storage
    return message
  }

  /// Whether a message has begun and not ended.
  var hasPartialMessage: Bool { pending.readableBytes > 0 }
}
