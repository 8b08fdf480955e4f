public import NIOCore

/// The 9-byte header every HTTP/2 frame starts with (RFC 9113, section 4.1), read in place by
/// the handlers that cut a connection's bytes at frame boundaries before `NIOHTTP2Handler`
/// (`HTTP2FrameAligner`, ServiceKit's ping pacing). Inlinable: it is read for every frame a
/// gateway receives.
public struct HTTP2FrameHeader: Equatable, Sendable {
  /// The header's size on the wire.
  public static let length = 9

  /// DATA (section 6.1), PING (6.7) and the flags these handlers look at.
  public static let dataType: UInt8 = 0x0
  public static let pingType: UInt8 = 0x6
  public static let paddedFlag: UInt8 = 0x8
  public static let ackFlag: UInt8 = 0x1

  /// The payload's length (24 bits), the header excluded.
  public var payloadLength: Int
  public var type: UInt8
  public var flags: UInt8
  /// The stream identifier, its reserved bit cleared.
  public var streamID: UInt32

  /// The header at `index` of `buffer`; `nil` if fewer than 9 bytes are there.
  @inlinable
  public init?(_ buffer: ByteBuffer, at index: Int) {
    guard
      let high = buffer.getInteger(at: index, as: UInt8.self),
      let low = buffer.getInteger(at: index + 1, as: UInt16.self),
      let type = buffer.getInteger(at: index + 3, as: UInt8.self),
      let flags = buffer.getInteger(at: index + 4, as: UInt8.self),
      let stream = buffer.getInteger(at: index + 5, as: UInt32.self)
    else { return nil }
    self.payloadLength = Int(high) << 16 | Int(low)
    self.type = type
    self.flags = flags
    self.streamID = stream & 0x7fff_ffff
  }

  /// The whole frame's size on the wire.
  @inlinable
  public var frameLength: Int { Self.length + payloadLength }
}
