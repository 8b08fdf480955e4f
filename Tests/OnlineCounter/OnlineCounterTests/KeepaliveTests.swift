import CounterGateway
import NIOCore
import NIOPosix
import ServiceKit
import Synchronization
import TestSupport
import Testing

/// The gateway's HTTP/2 keepalive (`KeepaliveHandler` and its per-loop sweep), against a raw
/// HTTP/2 peer on a real socket: the peer sends the client preface and SETTINGS and then
/// either answers the server's PINGs or stays silent. The intervals are short (1 s, 2 s); the
/// waits are bounds for a loaded machine, not latencies.
@Suite struct KeepaliveTests {
  static let keepalive = ConnectionKeepalive(interval: .seconds(1), timeout: .seconds(2))
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
}

/// An HTTP/2 client of a few lines: the connection preface and an empty SETTINGS frame, then
/// it reads frames and answers each PING with its ACK when told to; nothing else.
private final class RawHTTP2Peer: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private struct State {
    var pings = 0
    var closed = false
    var pending = ByteBuffer()
  }

  private let answersPings: Bool
  private let state = Mutex(State())
  private let channel = Mutex<(any Channel)?>(nil)

  private init(answersPings: Bool) {
    self.answersPings = answersPings
  }

  static func connect(to address: HostPort, answersPings: Bool) async throws -> RawHTTP2Peer {
    let peer = RawHTTP2Peer(answersPings: answersPings)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(peer)
        }
      }
      .connect(host: address.host, port: address.port).get()
    peer.channel.withLock { $0 = channel }
    var hello = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    hello.writeBytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  // SETTINGS, empty
    try await channel.writeAndFlush(hello)
    return peer
  }

  var pingsReceived: Int { state.withLock { $0.pings } }
  var closed: Bool { state.withLock { $0.closed } }

  func close() {
    channel.withLock { $0 }?.close(promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let bytes = unwrapInboundIn(data)
    let pings = state.withLock { state -> [ByteBuffer] in
      state.pending.writeImmutableBuffer(bytes)
      var pings: [ByteBuffer] = []
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
        }
      }
      return pings
    }
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
