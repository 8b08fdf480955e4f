import CounterGateway
import NIOCore
import NIOPosix
import ServiceKit
import Synchronization
import TestSupport
import Testing

/// The gateway's HTTP/2 keepalive (`KeepaliveHandler` and its per-loop sweep), against a raw
/// HTTP/2 peer on a real socket: the peer sends the client preface and SETTINGS and then
/// either answers the server's PINGs or stays silent. The interval is short (1 s); the timeout
/// (5 s) and the waits are bounds for a loaded machine, not latencies: with a 2 s timeout a
/// peer that answered was closed once in a fresh-clone CI run, its ack 2 s late.
@Suite struct KeepaliveTests {
  static let keepalive = ConnectionKeepalive(interval: .seconds(1), timeout: .seconds(5))
  /// No status: presence is not the subject.
  static let nowhere = [HostPort(host: Harness.loopback, port: 1)]

  @Test func aPeerThatNeverAnswersIsPingedThenClosed() async throws {
    try await Harness.withGateway(status: Self.nowhere, keepalive: Self.keepalive) {
      address, _, _, _ in
      let peer = try await RawHTTP2Peer.connect(to: address, answersPings: false)
      #expect(await eventually(timeout: .seconds(30)) { peer.closed })
      #expect(peer.pingsReceived >= 1, "closed without being pinged first")
    }
  }

  @Test func aPeerThatAnswersStaysConnected() async throws {
    try await Harness.withGateway(status: Self.nowhere, keepalive: Self.keepalive) {
      address, _, _, _ in
      let peer = try await RawHTTP2Peer.connect(to: address, answersPings: true)
      // Three pings answered: three intervals, each longer than the timeout is short.
      #expect(await eventually(timeout: .seconds(30)) { peer.pingsReceived >= 3 || peer.closed })
      #expect(!peer.closed)
      #expect(peer.pingsReceived >= 3)
      peer.close()
    }
  }

  /// Any read proves the peer alive, stream frames included: a client whose `Connect` stream
  /// answers the gateway's pings every second is not sent keepalive PINGs, even one that
  /// would not answer them (before, only connection-level frames counted, and this peer was
  /// pinged every interval, 3 s: five PINGs or more over the test). Two PINGs are tolerated:
  /// a loaded machine can hold the gateway's pings (and so the pongs) back for an interval,
  /// and the next pong answers it; the timeout is long for the same reason (with 1 s, the
  /// peer was closed in 2 of 3 runs under `stress-ng`).
  @Test func aPeerWhoseStreamIsBusyIsNotPinged() async throws {
    let keepalive = ConnectionKeepalive(interval: .seconds(3), timeout: .seconds(10))
    try await Harness.withGateway(status: Self.nowhere, keepalive: keepalive) {
      address, gateway, _, _ in
      let peer = try await RawHTTP2Peer.connect(
        to: address, answersPings: false, connectAs: "busy-peer")
      // Over five keepalive intervals: 15 pings take 15 s at one a second; 90 s bounds a
      // loaded host (six times that).
      #expect(await eventually(timeout: .seconds(90)) { peer.gatewayPings >= 15 || peer.closed })
      #expect(!peer.closed)
      #expect(peer.gatewayPings >= 15, "the Connect stream was not served")
      #expect(peer.pingsReceived <= 2, "a busy connection was sent keepalive PINGs")
      #expect(gateway.connectedClients == 1)
      peer.close()
    }
  }
}

/// An HTTP/2 client of a few lines: the connection preface and an empty SETTINGS frame, then
/// it reads frames and answers each PING with its ACK when told to. Given a user id, it also
/// opens a `Connect` stream (stream 1, headers in HPACK literals) and answers each of the
/// gateway's `Ping` messages with an EVEN `Pong`; nothing else.
private final class RawHTTP2Peer: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private struct State {
    var pings = 0
    /// `Ping` messages of the gateway on the `Connect` stream.
    var gatewayPings = 0
    var closed = false
    var pending = ByteBuffer()
  }

  private let answersPings: Bool
  private let state = Mutex(State())
  private let channel = Mutex<(any Channel)?>(nil)

  private init(answersPings: Bool) {
    self.answersPings = answersPings
  }

  /// One thread for every peer of the suite, for the life of the test process (as NIO's
  /// singleton group is).
  static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

  static func connect(
    to address: HostPort, answersPings: Bool, connectAs userID: String? = nil
  ) async throws -> RawHTTP2Peer {
    let peer = RawHTTP2Peer(answersPings: answersPings)
    // Its own event loop: on the shared singleton group, other tests' work can hold back the
    // peer's reads and acks, and the gateway would rightly close it.
    let channel = try await ClientBootstrap(group: Self.group)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(peer)
        }
      }
      .connect(host: address.host, port: address.port).get()
    peer.channel.withLock { $0 = channel }
    var hello = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    hello.writeBytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  // SETTINGS, empty
    if let userID { hello.writeImmutableBuffer(connectHeaders(host: address.host, userID: userID)) }
    try await channel.writeAndFlush(hello)
    return peer
  }

  /// A HEADERS frame (END_HEADERS) opening `Connect` on stream 1: each header a literal
  /// without indexing, with a new name (RFC 7541 §6.2.2), every length under 127.
  private static func connectHeaders(host: String, userID: String) -> ByteBuffer {
    let headers = [
      (":method", "POST"), (":scheme", "http"), (":path", "/tenten.interview.Gateway/Connect"),
      (":authority", host), ("content-type", "application/grpc"), ("te", "trailers"),
      ("client-id", userID),
    ]
    var block = ByteBuffer()
    for (name, value) in headers {
      block.writeInteger(UInt8(0))
      block.writeInteger(UInt8(name.utf8.count))
      block.writeString(name)
      block.writeInteger(UInt8(value.utf8.count))
      block.writeString(value)
    }
    var frame = ByteBuffer()
    frame.writeInteger(UInt32(block.readableBytes) << 8 | 0x1)  // length, type HEADERS
    frame.writeInteger(UInt8(0x4))  // END_HEADERS
    frame.writeInteger(UInt32(1))  // stream 1
    frame.writeImmutableBuffer(block)
    return frame
  }

  /// An EVEN `Pong` on stream 1: a DATA frame holding one gRPC message (`status: 2`).
  private static let pong = ByteBuffer(bytes: [
    0, 0, 7, 0, 0, 0, 0, 0, 1,  // DATA, 7 bytes, stream 1
    0, 0, 0, 0, 2, 0x08, 0x02,  // gRPC prefix, then field 1 = 2 (EVEN)
  ])

  var pingsReceived: Int { state.withLock { $0.pings } }
  var gatewayPings: Int { state.withLock { $0.gatewayPings } }
  var closed: Bool { state.withLock { $0.closed } }

  func close() {
    channel.withLock { $0 }?.close(promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let bytes = unwrapInboundIn(data)
    let (pings, pongs) = state.withLock { state -> ([ByteBuffer], Int) in
      state.pending.writeImmutableBuffer(bytes)
      var pings: [ByteBuffer] = []
      var pongs = 0
      // Frame header: 24-bit length, type, flags, 32-bit stream id; then the payload.
      while let length = state.pending.getInteger(at: state.pending.readerIndex, as: UInt32.self)
        .map({ Int($0 >> 8) }),
        state.pending.readableBytes >= 9 + length
      {
        let type = state.pending.getInteger(at: state.pending.readerIndex + 3, as: UInt8.self)!
        let flags = state.pending.getInteger(at: state.pending.readerIndex + 4, as: UInt8.self)!
        state.pending.moveReaderIndex(forwardBy: 9)
        let payload = state.pending.readSlice(length: length)!
        if type == 6, flags & 1 == 0 {  // PING, not an ACK
          state.pings += 1
          pings.append(payload)
        } else if type == 0, payload.readableBytes == 5 {  // DATA: the gateway's empty Ping
          state.gatewayPings += 1
          pongs += 1
        }
      }
      return (pings, pongs)
    }
    for _ in 0..<pongs { context.write(wrapOutboundOut(Self.pong), promise: nil) }
    if pongs > 0 { context.flush() }
    guard answersPings else { return }
    for payload in pings {
      var ack = ByteBuffer(bytes: [0, 0, 8, 6, 1, 0, 0, 0, 0])
      ack.writeImmutableBuffer(payload)
      context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    state.withLock { $0.closed = true }
    context.fireChannelInactive()
  }
}
