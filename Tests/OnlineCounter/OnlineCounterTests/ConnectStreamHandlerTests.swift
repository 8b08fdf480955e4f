import CounterProtos
import GRPCCore
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import ServiceKit
import SwiftProtobuf
import Testing
import Tracing

@testable import CounterGateway

/// One `Connect` stream served by `ConnectStreamHandler` on an embedded stream channel: what
/// the client is sent for each request, and that the gateway's session lives exactly as long
/// as the call. End to end (real HTTP/2, grpc-swift, grpc-go and grpcio clients): GatewayTests,
/// InteropTests and the rest of this target, which all run against `GatewayListener`.
@Suite struct ConnectStreamHandlerTests {
  static let connect = "/tenten.interview.Gateway/Connect"

  static func gateway(maxClients: Int = 10) throws -> Gateway {
    var configuration = Gateway.Configuration()
    configuration.maxClients = maxClients
    let reporter = try PresenceReporter(
      configuration: .init(gatewayID: "t", endpoints: [HostPort(host: "127.0.0.1", port: 1)]),
      logger: Harness.logger)
    return Gateway(
      configuration: configuration, reporter: reporter, health: nil, logger: Harness.logger,
      tracer: NoOpTracer())
  }

  static func channel(_ gateway: Gateway, maxMessageBytes: Int = 1024) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel(
      handler: ConnectStreamHandler(
        gateway: gateway, limits: .init(maxMessageBytes: maxMessageBytes, maxUnsentPings: 8)))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
  }

  static func request(path: String = connect, clientID: String? = "user-1")
    -> HTTP2Frame.FramePayload
  {
    var headers: HPACKHeaders = [
      ":method": "POST", ":scheme": "http", ":path": path, "content-type": "application/grpc",
      "te": "trailers",
    ]
    if let clientID { headers.add(name: "client-id", value: clientID) }
    return .headers(.init(headers: headers))
  }

  static func message(_ body: [UInt8], flag: UInt8 = 0, length: Int? = nil)
    -> HTTP2Frame.FramePayload
  {
    let length = length ?? body.count
    let prefix: [UInt8] = [
      flag, UInt8(length >> 24 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff),
      UInt8(length & 0xff),
    ]
    return .data(.init(data: .byteBuffer(ByteBuffer(bytes: prefix + body))))
  }

  static func pong(_ status: Tenten_Interview_Status) throws -> [UInt8] {
    try Tenten_Interview_Pong.with { $0.status = status }.serializedBytes()
  }

  /// The frames the handler wrote so far.
  static func written(_ channel: EmbeddedChannel) throws -> [HTTP2Frame.FramePayload] {
    var frames: [HTTP2Frame.FramePayload] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) {
      frames.append(frame)
    }
    return frames
  }

  /// The status of the call's last frame, if it is trailers.
  static func status(_ frames: [HTTP2Frame.FramePayload]) -> (code: Int, message: String?)? {
    guard case .headers(let trailers)? = frames.last, trailers.endStream,
      let code = trailers.headers.first(name: "grpc-status").flatMap({ Int($0) })
    else { return nil }
    return (code, trailers.headers.first(name: "grpc-message")?.removingPercentEncoding)
  }

  @Test func aCallGetsHeadersAndAPingAtOnceCountsPongsAndEndsOKWhenTheClientLeaves() throws {
    let gateway = try Self.gateway()
    let channel = try Self.channel(gateway)
    try channel.writeInbound(Self.request())
    let opening = try Self.written(channel)
    guard case .headers(let headers) = opening.first, case .data(let ping) = opening.last,
      case .byteBuffer(let bytes) = ping.data
    else {
      Issue.record("expected headers and a ping, got \(opening)")
      return
    }
    #expect(headers.headers.first(name: ":status") == "200" && !headers.endStream)
    #expect(Array(bytes.readableBytesView) == [0, 0, 0, 0, 0])  // an empty Ping
    #expect(gateway.connectedClients == 1)

    // Two pongs in one frame, then one split across two frames.
    let even = try Self.pong(.even)
    guard case .data(let first) = Self.message(even), case .byteBuffer(var one) = first.data
    else { return }
    one.writeImmutableBuffer(one)
    try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(one))))
    let split = [UInt8](one.readableBytesView.prefix(3))
    try channel.writeInbound(
      HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer(bytes: split)))))
    #expect(try Self.written(channel).isEmpty)
    let rest = [UInt8](one.readableBytesView.dropFirst(3).prefix(even.count + 5 - 3))
    try channel.writeInbound(
      HTTP2Frame.FramePayload.data(
        .init(data: .byteBuffer(ByteBuffer(bytes: rest)), endStream: true)))
    let end = try Self.written(channel)
    #expect(Self.status(end)?.code == 0, "\(end)")
    #expect(gateway.connectedClients == 0)
  }

  @Test(
    "requests the gateway will not serve get a status naming why",
    arguments: [
      ("/tenten.interview.Gateway/Nope", "user-1", 12, "Nope"),
      (connect, nil, 3, "missing 'client-id'"),
      (connect, "no spaces", 3, "outside"),
    ] as [(String, String?, Int, String)])
  func refusedRequests(path: String, clientID: String?, code: Int, says: String) throws {
    let gateway = try Self.gateway()
    let channel = try Self.channel(gateway)
    try channel.writeInbound(Self.request(path: path, clientID: clientID))
    let frames = try Self.written(channel)
    let status = try #require(Self.status(frames), "\(frames)")
    #expect(status.code == code)
    #expect(status.message?.contains(says) == true, "\(String(describing: status.message))")
    #expect(frames.count == 1)  // trailers-only
    #expect(gateway.connectedClients == 0)
  }

  @Test(
    "a bad message ends the call with a status from its prefix alone",
    arguments: [
      (0, 2_000, 8, "request message of 2000 bytes is over this server's limit of 1024 bytes"),
      (2, 1, 13, "compressed-flag byte 2 is neither 0 nor 1"),
    ] as [(UInt8, Int, Int, String)])
  func badMessages(flag: UInt8, length: Int, code: Int, says: String) throws {
    let gateway = try Self.gateway()
    let channel = try Self.channel(gateway)
    try channel.writeInbound(Self.request())
    _ = try Self.written(channel)
    // Only the prefix: the body never needs to arrive.
    try channel.writeInbound(Self.message([], flag: flag, length: length))
    let frames = try Self.written(channel)
    let status = try #require(Self.status(frames), "\(frames)")
    #expect(status.code == code)
    #expect(status.message?.contains(says) == true, "\(String(describing: status.message))")
    #expect(gateway.connectedClients == 0)
  }

  @Test func aStreamResetByTheClientLeavesNoSession() throws {
    let gateway = try Self.gateway()
    let channel = try Self.channel(gateway)
    try channel.writeInbound(Self.request())
    #expect(gateway.connectedClients == 1)
    channel.pipeline.fireChannelInactive()
    #expect(gateway.connectedClients == 0)
  }

  /// A client that stops reading (its connection does not drain): its pings are written but
  /// never sent. The stream is reset once more than `maxUnsentPings` are held, so it costs a
  /// few pings, not what fits below HTTP/2's watermarks.
  @Test func aClientThatDoesNotReadItsPingsIsResetAfterTheCap() throws {
    let gateway = try Self.gateway()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandlers(
      HeldWrites(),
      ConnectStreamHandler(
        gateway: gateway, limits: .init(maxMessageBytes: 1024, maxUnsentPings: 8)))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.writeInbound(Self.request())
    #expect(gateway.connectedClients == 1)
    // The first ping went out at once; seven more visits of every slot make eight held.
    for _ in 0..<7 {
      gateway.scheduler.visit(ticks: 0...99, now: .now)
      channel.embeddedEventLoop.run()
    }
    #expect(channel.isActive)
    // The ninth unsent ping resets the stream.
    gateway.scheduler.visit(ticks: 0...99, now: .now)
    channel.embeddedEventLoop.run()
    #expect(!channel.isActive)
    #expect(gateway.connectedClients == 0)
  }

  /// The pong fast path reads what SwiftProtobuf reads for every status a client sends, and
  /// leaves every other encoding of a `Pong` to SwiftProtobuf.
  @Test func canonicalPongsAreReadAsSwiftProtobufReadsThem() throws {
    let statuses: [Tenten_Interview_Status] = [
      .unknown, .even, .odd, .UNRECOGNIZED(3), .UNRECOGNIZED(127),
    ]
    for status in statuses {
      let bytes: [UInt8] = try Tenten_Interview_Pong.with { $0.status = status }.serializedBytes()
      #expect(ConnectStreamHandler.canonicalPongStatus(ByteBuffer(bytes: bytes)) == status)
      #expect(try Tenten_Interview_Pong(serializedBytes: bytes).status == status)
    }
    let others: [[UInt8]] = [
      [0x08, 0x80, 0x01],  // 128: a two-byte varint
      [0x08],  // truncated
      [0x10, 0x01],  // field 2
      [0x09, 0x01],  // field 1 with the wrong wire type
      [0x08, 0x01, 0x08, 0x02],  // field 1 twice: the last wins
    ]
    for bytes in others {
      #expect(ConnectStreamHandler.canonicalPongStatus(ByteBuffer(bytes: bytes)) == nil)
    }
  }

  @Test func aFullGatewayRefusesWithResourceExhausted() throws {
    let gateway = try Self.gateway(maxClients: 1)
    let first = try Self.channel(gateway)
    try first.writeInbound(Self.request(clientID: "a"))
    let second = try Self.channel(gateway)
    try second.writeInbound(Self.request(clientID: "b"))
    let status = try #require(Self.status(try Self.written(second)))
    #expect(status.code == 8 && status.message?.contains("limit of 1 clients") == true)
    #expect(gateway.connectedClients == 1)
  }
}

/// Holds every write without sending it or completing its promise: a peer whose connection
/// does not drain.
private final class HeldWrites: ChannelOutboundHandler {
  typealias OutboundIn = HTTP2Frame.FramePayload
  private var held: [EventLoopPromise<Void>?] = []

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    held.append(promise)
  }

  func flush(context: ChannelHandlerContext) {}

  /// Fails what it held, as a closing connection does (a promise must not be dropped).
  func handlerRemoved(context: ChannelHandlerContext) {
    for promise in held { promise?.fail(ChannelError.ioOnClosedChannel) }
    held = []
  }
}
