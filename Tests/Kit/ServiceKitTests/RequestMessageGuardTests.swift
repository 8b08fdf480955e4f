import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import ServiceKit

/// The guard in front of grpc-swift's stream handler, on an embedded stream channel: messages
/// within the limit pass untouched whatever the framing; an oversized message or a bad
/// compressed flag is answered with a status as soon as its 5-byte prefix is complete, nothing
/// more reaches gRPC, and the stream closes. End to end: `GatewayTests` (an oversized pong)
/// and the job worker's `HostileInputTests` (a 100 KB and a 10 MB request).
@Suite struct RequestMessageGuardTests {
  static func message(flag: UInt8 = 0, length: Int, body: Int? = nil) -> [UInt8] {
    [flag, UInt8(length >> 24 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff),
      UInt8(length & 0xff)] + [UInt8](repeating: 7, count: body ?? length)
  }

  static func data(_ bytes: [UInt8]) -> HTTP2Frame.FramePayload {
    .data(.init(data: .byteBuffer(ByteBuffer(bytes: bytes))))
  }

  /// A channel with a guard of `limit` bytes, its request headers already through.
  static func channel(limit: Int = 100) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel(handler: RequestMessageGuard(maxMessageBytes: limit))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.writeInbound(HTTP2Frame.FramePayload.headers(.init(headers: [":path": "/x"])))
    _ = try channel.readInbound(as: HTTP2Frame.FramePayload.self)
    return channel
  }

  /// The bytes of every DATA frame that reached the next handler.
  static func passedBytes(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var bytes: [UInt8] = []
    while let payload = try channel.readInbound(as: HTTP2Frame.FramePayload.self) {
      if case .data(let frame) = payload, case .byteBuffer(let buffer) = frame.data {
        bytes += buffer.readableBytesView
      }
    }
    return bytes
  }

  /// The status the guard wrote, if it wrote one.
  static func written(_ channel: EmbeddedChannel) throws -> HPACKHeaders? {
    guard let payload = try channel.readOutbound(as: HTTP2Frame.FramePayload.self),
      case .headers(let headers) = payload
    else { return nil }
    #expect(headers.endStream)
    return headers.headers
  }

  @Test func messagesWithinTheLimitPassWhateverTheFraming() throws {
    let channel = try Self.channel()
    // Three messages (0, 100 and 50 bytes) in frames cut inside prefixes and bodies.
    let bytes = Self.message(length: 0) + Self.message(flag: 1, length: 100)
      + Self.message(length: 50)
    var cuts = [0, 3, 4, 9, 60, 107, 108, bytes.count]
    cuts = Array(Set(cuts)).sorted()
    for (start, end) in zip(cuts, cuts.dropFirst()) {
      try channel.writeInbound(Self.data(Array(bytes[start..<end])))
    }
    #expect(try Self.passedBytes(channel) == bytes)
    #expect(try Self.written(channel) == nil)
    #expect(channel.isActive)
  }

  @Test func anOversizedMessageIsRefusedFromItsPrefix() throws {
    let channel = try Self.channel()
    try channel.writeInbound(Self.data(Self.message(length: 10)))
    // The prefix alone, split: refused before any of the 70,000 bytes arrive.
    try channel.writeInbound(Self.data(Array(Self.message(length: 70_000, body: 0)[0..<2])))
    try channel.writeInbound(Self.data(Array(Self.message(length: 70_000, body: 0)[2...])))
    try channel.writeInbound(Self.data([UInt8](repeating: 7, count: 1_000)))
    // What came before the prefix was complete went on (gRPC buffers a partial prefix);
    // nothing after.
    #expect(
      try Self.passedBytes(channel)
        == Self.message(length: 10) + Self.message(length: 70_000, body: 0)[0..<2])
    let status = try #require(try Self.written(channel))
    #expect(status[":status"] == ["200"])
    #expect(status["grpc-status"] == ["8"])
    #expect(
      status["grpc-message"]
        == ["request message of 70000 bytes is over this server's limit of 100 bytes"])
    #expect(!channel.isActive)
  }

  @Test func aCompressedFlagOtherThanZeroOrOneIsInternal() throws {
    let channel = try Self.channel()
    try channel.writeInbound(Self.data(Self.message(flag: 2, length: 2)))
    #expect(try Self.passedBytes(channel).isEmpty)
    let status = try #require(try Self.written(channel))
    #expect(status["grpc-status"] == ["13"])
    #expect(
      status["grpc-message"]
        == ["invalid gRPC message: compressed-flag byte 2 is neither 0 nor 1"])
  }

  @Test func afterResponseHeadersOnlyTrailersAreSent() throws {
    let channel = try Self.channel()
    try channel.writeOutbound(
      HTTP2Frame.FramePayload.headers(.init(headers: [":status": "200"])))
    _ = try channel.readOutbound(as: HTTP2Frame.FramePayload.self)
    try channel.writeInbound(Self.data(Self.message(length: 1_000, body: 0)))
    let status = try #require(try Self.written(channel))
    #expect(status[":status"].isEmpty)
    #expect(status["grpc-status"] == ["8"])
  }

  /// Issue 10: a client that stops reading must cost a bounded number of pings, not the
  /// ~1,600 (200 bytes each) that fit below swift-nio-http2's 8 KiB stream watermark.
  @Test func aStreamWithMoreUnsentMessagesThanTheCapIsReset() throws {
    let channel = EmbeddedChannel(
      handler: RequestMessageGuard(maxMessageBytes: 100, maxUnsentMessages: 8))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    let ping = Self.data([0, 0, 0, 0, 0])
    // A reading client: each message is sent (in the embedded channel: flushed) at once.
    for _ in 0..<50 {
      channel.writeAndFlush(ping, promise: nil)
    }
    #expect(channel.isActive)
    // A stuck one: written, never sent. Eight are held...
    for _ in 0..<8 { channel.write(ping, promise: nil) }
    #expect(channel.isActive)
    // ...the ninth resets the stream.
    channel.write(ping, promise: nil)
    #expect(!channel.isActive)
  }

  @Test func withoutACapUnsentMessagesAreLeftToFlowControl() throws {
    let channel = EmbeddedChannel(handler: RequestMessageGuard(maxMessageBytes: 100))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    for _ in 0..<100 { channel.write(Self.data([0, 0, 0, 0, 0]), promise: nil) }
    #expect(channel.isActive)
  }

  @Test func grpcMessageIsPercentEncoded() {
    #expect(RequestMessageGuard.percentEncoded("50% é") == "50%25 %C3%A9")
  }
}
