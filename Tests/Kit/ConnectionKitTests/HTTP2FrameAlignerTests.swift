import ConnectionKit
import NIOCore
import NIOEmbedded
import Testing

/// `HTTP2FrameAligner` against byte streams of real HTTP/2 frame layouts, cut into reads every
/// way that matters: nothing is lost or reordered, and every read it hands on ends where
/// swift-nio-http2's decoder keeps no partial state (a frame boundary, or inside an unpadded
/// DATA payload), in steps of at most `maximumReadLength` unless one whole frame is longer.
@Suite struct HTTP2FrameAlignerTests {
  struct Frame {
    var type: UInt8
    var flags: UInt8 = 0
    var stream: UInt32 = 1
    var payloadLength: Int
  }

  /// A server's side of a gRPC call: SETTINGS, its ACK, a WINDOW_UPDATE, response HEADERS,
  /// DATA of several sizes (one padded, one empty), a PING, and trailers.
  static let frames: [Frame] = [
    Frame(type: 0x4, stream: 0, payloadLength: 18),  // SETTINGS
    Frame(type: 0x4, flags: 0x1, stream: 0, payloadLength: 0),  // SETTINGS ACK
    Frame(type: 0x8, stream: 0, payloadLength: 4),  // WINDOW_UPDATE
    Frame(type: 0x1, flags: 0x4, payloadLength: 40),  // HEADERS
    Frame(type: 0x0, payloadLength: 5),  // DATA: a gRPC message prefix
    Frame(type: 0x0, payloadLength: 40_000),  // DATA, larger than a read step
    Frame(type: 0x6, stream: 0, payloadLength: 8),  // PING
    Frame(type: 0x0, payloadLength: 16_384),
    Frame(type: 0x0, flags: 0x8, payloadLength: 300),  // DATA, PADDED
    Frame(type: 0x1, flags: 0x4, payloadLength: 20_000),  // HEADERS longer than a read step
    Frame(type: 0x0, payloadLength: 0),  // DATA, empty
    Frame(type: 0x0, payloadLength: 70_000),  // DATA, several read steps
    Frame(type: 0x1, flags: 0x5, payloadLength: 30),  // trailers, END_STREAM
  ]

  static func encode(_ frames: [Frame]) -> (bytes: ByteBuffer, frameStarts: [Int]) {
    var buffer = ByteBuffer()
    var starts: [Int] = []
    for (index, frame) in frames.enumerated() {
      starts.append(buffer.writerIndex)
      buffer.writeInteger(UInt8(truncatingIfNeeded: frame.payloadLength >> 16))
      buffer.writeInteger(UInt16(truncatingIfNeeded: frame.payloadLength))
      buffer.writeInteger(frame.type)
      buffer.writeInteger(frame.flags)
      buffer.writeInteger(frame.stream)
      // Payload bytes that differ from frame to frame, so that a reordering would show.
      buffer.writeRepeatingByte(
        UInt8(truncatingIfNeeded: index &* 37 &+ 1), count: frame.payloadLength)
    }
    return (buffer, starts)
  }

  /// The offsets at which a read may end: frame boundaries, and anywhere inside an unpadded
  /// DATA frame's payload.
  static func allowedEnds(_ frames: [Frame], starts: [Int]) -> Set<Int> {
    var allowed = Set<Int>()
    for (frame, start) in zip(frames, starts) {
      let payloadStart = start + 9
      allowed.insert(start)
      allowed.insert(payloadStart + frame.payloadLength)
      if frame.type == 0x0 && frame.flags & 0x8 == 0 {
        allowed.formUnion(payloadStart...(payloadStart + frame.payloadLength))
      }
    }
    return allowed
  }

  /// Feeds `input` cut into reads of the given sizes (cycled); returns what came out.
  static func feed(
    _ input: ByteBuffer, readSizes: [Int], aligner: HTTP2FrameAligner
  ) throws -> [ByteBuffer] {
    let channel = EmbeddedChannel(handler: aligner)
    var input = input
    var out: [ByteBuffer] = []
    var read = 0
    while input.readableBytes > 0 {
      let size = readSizes[read % readSizes.count]
      read += 1
      try channel.writeInbound(input.readSlice(length: min(size, input.readableBytes))!)
      while let piece = try channel.readInbound(as: ByteBuffer.self) { out.append(piece) }
    }
    _ = try channel.finish()
    return out
  }

  static let cuts: [(String, [Int])] = [
    ("one byte at a time", [1]),
    ("inside every header", [7, 3]),
    ("TLS-record sized", [16_384 + 29]),
    ("large reads", [300_000]),
    ("mixed", [9, 65_536, 4, 1_000, 131_072, 17]),
    ("everything at once", [1 << 30]),
  ]

  @Test("reads end only where the decoder keeps nothing, and nothing is lost", arguments: cuts)
  func readsEndAtAllowedPoints(cut: (String, [Int])) throws {
    // Byte by byte only through the smaller frames: a write per byte is slow in a debug
    // build, and the suite runs beside others.
    let frames = cut.1 == [1] ? Self.frames.filter { $0.payloadLength <= 20_000 } : Self.frames
    let (input, starts) = Self.encode(frames)
    let allowed = Self.allowedEnds(frames, starts: starts)
    let step = 16 * 1024
    let out = try Self.feed(
      input, readSizes: cut.1,
      aligner: HTTP2FrameAligner(maximumFrameLength: 1 << 20, maximumReadLength: step))
    Self.check(out, of: input, starts: starts, allowed: allowed, step: step, cut.0)
  }

  /// What every cut must give: no empty read, each ending at an allowed point, at most `step`
  /// bytes or exactly one whole (longer) frame, and all the bytes in their order.
  static func check(
    _ out: [ByteBuffer], of input: ByteBuffer, starts: [Int], allowed: Set<Int>, step: Int,
    _ label: String
  ) {
    var joined = ByteBuffer()
    var end = 0
    for var piece in out {
      #expect(piece.readableBytes > 0, "\(label): an empty read")
      let start = end
      end += piece.readableBytes
      #expect(allowed.contains(end), "\(label): a read ends at \(end), inside a header or frame")
      let oneWholeFrame =
        starts.contains(start) && (starts + [input.readableBytes]).contains(end)
        && starts.filter { $0 > start && $0 < end }.isEmpty
      #expect(piece.readableBytes <= step || oneWholeFrame, "\(label): \(start)..<\(end)")
      joined.writeBuffer(&piece)
    }
    #expect(joined == input, "\(label): the bytes handed on differ from those read")
  }

  @Test("random cuts: every byte is handed on, in order, at allowed points")
  func randomCuts() throws {
    // A fixed-seed linear congruential generator: the same 300 cut patterns on every run.
    var seed: UInt64 = 0x2545_F491_4F6C_DD1D
    func next(_ bound: Int) -> Int {
      seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Int((seed >> 33) % UInt64(bound))
    }
    let (input, starts) = Self.encode(Self.frames)
    let allowed = Self.allowedEnds(Self.frames, starts: starts)
    for pattern in 0..<300 {
      // Mostly small reads (inside headers and control frames), some large.
      let sizes = (0..<16).map { _ in next(4) == 0 ? 1 + next(70_000) : 1 + next(40) }
      let out = try Self.feed(
        input, readSizes: sizes, aligner: HTTP2FrameAligner(maximumFrameLength: 1 << 20))
      Self.check(
        out, of: input, starts: starts, allowed: allowed, step: 16 * 1024,
        "pattern \(pattern) \(sizes)")
    }
  }

  @Test("an incomplete control frame is held until whole, then handed on in one read")
  func controlFrameIsHeldWhole() throws {
    let frames = [Frame(type: 0x4, stream: 0, payloadLength: 1_000)]
    let (input, _) = Self.encode(frames)
    let out = try Self.feed(
      input, readSizes: [1], aligner: HTTP2FrameAligner(maximumFrameLength: 1 << 20))
    #expect(out.map(\.readableBytes) == [1_009])
  }

  @Test("a frame over the limit is passed through for the HTTP/2 handler to refuse")
  func oversizedFrameIsPassedThrough() throws {
    // A HEADERS frame of 2 MiB announced against a 1 MiB limit: not held (a peer could make a
    // holding client buffer 16 MiB); its bytes and everything after go on as they come.
    var frames = [Frame(type: 0x1, payloadLength: 2 << 20)]
    frames.append(Frame(type: 0x6, stream: 0, payloadLength: 8))
    let (input, _) = Self.encode(frames)
    let reads = [4, 5, 100_000, 1 << 22]
    let out = try Self.feed(
      input, readSizes: reads, aligner: HTTP2FrameAligner(maximumFrameLength: 1 << 20))
    // The first 4 bytes are held (an incomplete header); then the header, and then each read
    // as it came.
    #expect(out.map(\.readableBytes) == [9, 100_000, input.readableBytes - 100_009])
    var joined = ByteBuffer()
    for var piece in out { joined.writeBuffer(&piece) }
    #expect(joined == input)
  }
}
