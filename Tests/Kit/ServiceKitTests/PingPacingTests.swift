import NIOCore
import NIOEmbedded
import Testing

@testable import ServiceKit

/// The pacer in front of the HTTP/2 handler: frame boundaries found whatever the reads, pings
/// paced on the event loop's clock, everything else passed on at once and in order, and a
/// flood not paced (so that swift-nio-http2's own limit still closes it). That grpc-go clients
/// are served through it is checked end to end in OnlineCounterTests' `InteropTests`.
@Suite struct PingPacingTests {
  static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

  static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8])
    -> [UInt8]
  {
    let length = payload.count
    return [UInt8(length >> 16), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags]
      + withUnsafeBytes(of: stream.bigEndian, Array.init) + payload
  }

  static func ping(_ tag: UInt8, ack: Bool = false) -> [UInt8] {
    frame(type: 0x6, flags: ack ? 0x1 : 0, payload: Array(repeating: tag, count: 8))
  }

  static let settings = frame(type: 0x4, payload: [0, 4, 0, 1, 0, 0])
  static let settingsAck = frame(type: 0x4, flags: 0x1, payload: [])
  static func data(_ bytes: Int) -> [UInt8] {
    frame(type: 0x0, stream: 1, payload: (0..<bytes).map { UInt8($0 % 251) })
  }

  @Test func theSplitterFindsPingsWhateverTheReadSizes() {
    let pingA = Self.ping(0xA)
    let pingB = Self.ping(0xB)
    let stream =
      Self.preface + Self.settings + pingA + Self.data(40) + Self.ping(0xC, ack: true)
      + Self.settingsAck + pingB + pingB + Self.data(0) + Self.data(3)
    for size in 1...stream.count {
      var splitter = HTTP2PingSplitter()
      var rebuilt: [UInt8] = []
      var pings: [[UInt8]] = []
      var offset = 0
      while offset < stream.count {
        var input = ByteBuffer(bytes: stream[offset..<min(offset + size, stream.count)])
        offset += size
        while let piece = splitter.next(from: &input, stopAtFrameEnd: size % 2 == 0) {
          switch piece {
          case .bytes(let bytes): rebuilt += Array(buffer: bytes)
          case .ping(let ping):
            pings.append(Array(buffer: ping))
            rebuilt += Array(buffer: ping)
          }
        }
      }
      // Passed on at once, the pieces are the stream itself; only non-ACK pings are held.
      #expect(rebuilt == stream, "reads of \(size) bytes")
      #expect(pings == [pingA, pingB, pingB], "reads of \(size) bytes")
      #expect(splitter.atFrameBoundary)
    }
  }

  /// An embedded channel (its clock moves only when the test says) holding just the pacer.
  static func pacer(interval: TimeAmount = .milliseconds(250), maxHeld: Int = 4) throws
    -> EmbeddedChannel
  {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(
      PingPacingHandler(configuration: .init(interval: interval, maxHeld: maxHeld)))
    return channel
  }

  static func send(_ bytes: [UInt8], to channel: EmbeddedChannel) throws {
    try channel.writeInbound(ByteBuffer(bytes: bytes))
  }

  /// Everything the pacer has passed on since the last call.
  static func passedOn(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var bytes: [UInt8] = []
    while let buffer = try channel.readInbound(as: ByteBuffer.self) {
      bytes += Array(buffer: buffer)
    }
    return bytes
  }

  @Test func pingsArePacedAndNothingElseWaits() throws {
    let channel = try Self.pacer()
    try Self.send(Self.preface + Self.settings + Self.ping(1), to: channel)
    #expect(try Self.passedOn(channel) == Self.preface + Self.settings + Self.ping(1))

    // Too soon: held, while the frames after it, acks included, pass.
    try Self.send(Self.ping(2) + Self.data(10) + Self.ping(9, ack: true), to: channel)
    #expect(try Self.passedOn(channel) == Self.data(10) + Self.ping(9, ack: true))
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(249))
    #expect(try Self.passedOn(channel).isEmpty)
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
    #expect(try Self.passedOn(channel) == Self.ping(2))

    // Two more at once: one every interval.
    try Self.send(Self.ping(3) + Self.ping(4), to: channel)
    #expect(try Self.passedOn(channel).isEmpty)
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(250))
    #expect(try Self.passedOn(channel) == Self.ping(3))
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(250))
    #expect(try Self.passedOn(channel) == Self.ping(4))

    // After a quiet interval, a ping passes at once again.
    channel.embeddedEventLoop.advanceTime(by: .seconds(1))
    try Self.send(Self.ping(5), to: channel)
    #expect(try Self.passedOn(channel) == Self.ping(5))
    #expect(try channel.finish().isClean)
  }

  @Test func aHeldPingWaitsForTheEndOfTheFrameBeingPassedOn() throws {
    let channel = try Self.pacer()
    try Self.send(Self.preface + Self.ping(1) + Self.ping(2), to: channel)
    #expect(try Self.passedOn(channel) == Self.preface + Self.ping(1))
    let data = Self.data(100)
    try Self.send(Array(data[..<50]), to: channel)
    channel.embeddedEventLoop.advanceTime(by: .milliseconds(300))
    // Due, but the bytes passed on end inside a DATA frame.
    #expect(try Self.passedOn(channel) == Array(data[..<50]))
    try Self.send(Array(data[50...]) + Self.settingsAck, to: channel)
    #expect(try Self.passedOn(channel) == Array(data[50...]) + Self.ping(2) + Self.settingsAck)
    #expect(try channel.finish().isClean)
  }

  @Test func aFloodIsPassedOnUnpaced() throws {
    let channel = try Self.pacer(maxHeld: 4)
    try Self.send(Self.preface, to: channel)
    _ = try Self.passedOn(channel)
    // A client that does not wait for acks: the first passes, four are held, the rest pass at
    // once, for swift-nio-http2 to count against its 200 control frames in 30 s.
    try Self.send((1...20).flatMap { Self.ping(UInt8($0)) }, to: channel)
    #expect(
      try Self.passedOn(channel)
        == [1, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20].flatMap {
          Self.ping(UInt8($0))
        })
    channel.embeddedEventLoop.advanceTime(by: .seconds(1))
    #expect(try Self.passedOn(channel) == (2...5).flatMap { Self.ping(UInt8($0)) })
    #expect(try channel.finish().isClean)
  }
}
