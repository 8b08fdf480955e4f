// The floor of the gateway's stack: the smallest server that serves gateway-scale.sh's load
// the way the gateway does on the wire, and nothing else (issue 12; docs/benchmarks.md,
// "The floor of the stack"). Plaintext HTTP/2 on swift-nio-http2, one event loop per CPU the
// process may run on; it answers `/tenten.interview.Gateway/Connect` with response headers,
// writes one gRPC-framed Ping a second per stream (an empty `Ping`: the gateway's 5 bytes)
// with a flush each, and reads and drops the Pongs (only their 5-byte gRPC prefix is parsed).
// No presence, metrics, admission, keepalive or idle timers, no write promise per ping.
//
// usage: H2FloorServer [--listen HOST:PORT] [--mode multiplexer|frames] [--threads N]
//                      [--stats-interval SECONDS]
//   multiplexer (default): NIOHTTP2Handler with its StreamMultiplexer, each stream a channel
//     of its own (what the gateway does);
//   frames: NIOHTTP2Handler alone, the streams served as HTTP2Frames on the connection's own
//     pipeline, flow control included (the cheapest swift-nio-http2 can go).
// Prints `streams_seen=N open=M pongs=P` every stats interval (default 5 s) on stdout.
//
// Pings come from one timer per event loop, a wheel of 100 slots of 10 ms as the gateway's
// `PingScheduler` has (its streams spread over the second, one visit per tick), rather than a
// scheduled task per stream: that is what the gateway does, and it keeps NIO's timer heap
// out of the per-ping cost.
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

enum Mode: String {
  case multiplexer, frames
}

struct Options {
  var host = "127.0.0.1"
  var port = 23091
  var mode = Mode.multiplexer
  var threads = allowedCPUs()
  var statsInterval = 5

  static func parse(_ arguments: [String]) -> Options {
    var options = Options()
    var rest = arguments[...]
    func value(_ name: String) -> String {
      guard let value = rest.popFirst() else { fail("\(name) needs a value") }
      return value
    }
    while let argument = rest.popFirst() {
      switch argument {
      case "--listen":
        let address = value(argument)
        guard let colon = address.lastIndex(of: ":"),
          let port = Int(address[address.index(after: colon)...])
        else { fail("--listen HOST:PORT") }
        options.host = String(address[..<colon])
        options.port = port
      case "--mode":
        guard let mode = Mode(rawValue: value(argument)) else { fail("--mode multiplexer|frames") }
        options.mode = mode
      case "--threads":
        guard let threads = Int(value(argument)), threads > 0 else { fail("--threads N") }
        options.threads = threads
      case "--stats-interval":
        guard let seconds = Int(value(argument)), seconds > 0 else { fail("--stats-interval S") }
        options.statsInterval = seconds
      default: fail("unknown argument \(argument)")
      }
    }
    return options
  }
}

func fail(_ message: String) -> Never {
  printLine("H2FloorServer: \(message)", to: 2)
  exit(2)
}

/// One line on a file descriptor, unbuffered (the script reads it while the server runs).
func printLine(_ line: String, to descriptor: Int32 = 1) {
  var bytes = Array((line + "\n").utf8)
  _ = write(descriptor, &bytes, bytes.count)
}

/// The CPUs this process may run on (its affinity mask, `Cpus_allowed` in
/// `/proc/self/status`), as the gateway's `ProcessEventLoops` counts them, within
/// `System.coreCount`.
func allowedCPUs() -> Int {
  let descriptor = open("/proc/self/status", O_RDONLY)
  guard descriptor >= 0 else { return System.coreCount }
  defer { close(descriptor) }
  var bytes = [UInt8](repeating: 0, count: 8192)
  let count = read(descriptor, &bytes, bytes.count)
  guard count > 0 else { return System.coreCount }
  let status = String(decoding: bytes[..<count], as: UTF8.self)
  guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
  else { return System.coreCount }
  let allowed = line.dropFirst("Cpus_allowed:".count).reduce(0) {
    $0 + ($1.hexDigitValue?.nonzeroBitCount ?? 0)
  }
  return max(1, min(allowed, System.coreCount))
}

// MARK: The wire

enum Wire {
  static let path = "/tenten.interview.Gateway/Connect"
  /// An empty `Ping`: the 5-byte gRPC prefix (not compressed, length 0), as the gateway sends.
  static let ping = ByteBuffer(bytes: [0, 0, 0, 0, 0])
  static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
  static let okTrailers: HPACKHeaders = ["grpc-status": "0"]
  static let unimplemented: HPACKHeaders = [
    ":status": "200", "content-type": "application/grpc", "grpc-status": "12",
  ]
}

/// Skips gRPC messages (5-byte prefix: flag, big-endian length; then the body), counting
/// them. Messages and prefixes may be split across DATA frames.
struct MessageSkipper {
  private var prefix: [UInt8] = []
  private var bodyLeft = 0

  /// The whole messages that `bytes` ended.
  mutating func consume(_ bytes: ByteBuffer) -> Int {
    var bytes = bytes
    var messages = 0
    while bytes.readableBytes > 0 {
      if bodyLeft > 0 {
        let skipped = min(bodyLeft, bytes.readableBytes)
        bytes.moveReaderIndex(forwardBy: skipped)
        bodyLeft -= skipped
        if bodyLeft == 0 { messages += 1 }
        continue
      }
      let needed = 5 - prefix.count
      let available = min(needed, bytes.readableBytes)
      if prefix.isEmpty, available == 5 {
        let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self)!
        bytes.moveReaderIndex(forwardBy: 5)
        bodyLeft = Int(length)
      } else {
        prefix += bytes.readBytes(length: available)!
        guard prefix.count == 5 else { break }
        bodyLeft = prefix[1...].reduce(0) { $0 << 8 | Int($1) }
        prefix = []
      }
      if bodyLeft == 0 { messages += 1 }
    }
    return messages
  }
}

// MARK: The ping wheel, one per event loop

/// A stream the wheel pings.
protocol Pingable: AnyObject {
  func ping()
}

/// Pings each of its loop's streams once a second: 100 slots of 10 ms, one visited per tick
/// (every slot since the last visit, when the loop ran late), a new stream in the next slot
/// round robin. Also the loop's counts. On its event loop only.
final class PingWheel {
  static let slotCount = 100
  static let tick = TimeAmount.milliseconds(10)

  private var slots = [[ObjectIdentifier: any Pingable]](repeating: [:], count: slotCount)
  private var nextSlot = 0
  private var start = NIODeadline.now()
  private var fired: Int64 = -1
  private(set) var seen = 0
  private(set) var open = 0
  var pongs = 0

  /// Adds a stream; returns its slot, for ``remove(_:slot:)``.
  func add(_ stream: any Pingable) -> Int {
    let slot = nextSlot
    nextSlot = (nextSlot + 1) % Self.slotCount
    slots[slot][ObjectIdentifier(stream)] = stream
    seen += 1
    open += 1
    return slot
  }

  func remove(_ stream: any Pingable, slot: Int) {
    if slots[slot].removeValue(forKey: ObjectIdentifier(stream)) != nil { open -= 1 }
  }

  /// Visits every slot due since the last visit (at most each once).
  func visit(now: NIODeadline) {
    let due = (now - start).nanoseconds / Self.tick.nanoseconds
    var tick = max(fired + 1, due - Int64(Self.slotCount) + 1)
    while tick <= due {
      for stream in slots[Int(tick % Int64(Self.slotCount))].values { stream.ping() }
      tick += 1
    }
    fired = max(fired, due)
  }

  /// The wheels of `group`'s loops, each ticking from now on; keyed by loop.
  static func start(on group: MultiThreadedEventLoopGroup) throws -> [ObjectIdentifier: NIOLoopBound<PingWheel>] {
    var wheels: [ObjectIdentifier: NIOLoopBound<PingWheel>] = [:]
    for loop in group.makeIterator() {
      wheels[ObjectIdentifier(loop)] = try loop.submit {
        let wheel = NIOLoopBound(PingWheel(), eventLoop: loop)
        loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
          wheel.value.visit(now: .now())
        }
        return wheel
      }.wait()
    }
    return wheels
  }
}

// MARK: Multiplexer mode: each stream a channel

/// One `Connect` stream on its own stream channel.
final class StreamChannelHandler: ChannelInboundHandler, Pingable {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private let wheel: PingWheel
  private var context: ChannelHandlerContext?
  private var slot: Int?
  private var opened = false
  private var skipper = MessageSkipper()

  init(wheel: PingWheel) { self.wheel = wheel }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .headers(let headers) where !opened:
      opened = true
      guard headers.headers.first(name: ":path") == Wire.path else {
        let trailers = HTTP2Frame.FramePayload.headers(
          .init(headers: Wire.unimplemented, endStream: true))
        context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
        return
      }
      context.write(wrapOutboundOut(.headers(.init(headers: Wire.responseHeaders))), promise: nil)
      slot = wheel.add(self)
      ping()  // the first at once, as the gateway does
      if headers.endStream { end(context: context) }
    case .headers(let trailers):
      if trailers.endStream { end(context: context) }
    case .data(let data):
      if case .byteBuffer(let bytes) = data.data { wheel.pongs += skipper.consume(bytes) }
      if data.endStream { end(context: context) }
    default:
      break
    }
  }

  func ping() {
    context?.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(Wire.ping)))), promise: nil)
  }

  /// The client half-closed: OK trailers.
  private func end(context: ChannelHandlerContext) {
    guard let slot else { return }
    wheel.remove(self, slot: slot)
    self.slot = nil
    let trailers = HTTP2Frame.FramePayload.headers(.init(headers: Wire.okTrailers, endStream: true))
    context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if let slot { wheel.remove(self, slot: slot) }
    slot = nil
    self.context = nil
    context.fireChannelInactive()
  }
}

// MARK: Frames mode: the streams on the connection's pipeline

/// Every `Connect` stream of one connection, as HTTP2Frames behind the `NIOHTTP2Handler`,
/// with the flow control the multiplexer otherwise does: a WINDOW_UPDATE for the connection
/// and for a stream once half of its 65,535-byte window has been received.
final class ConnectionFramesHandler: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  /// One stream: pinged by the wheel through this handler.
  final class Stream: Pingable {
    let id: HTTP2StreamID
    unowned let connection: ConnectionFramesHandler
    var slot = 0
    var skipper = MessageSkipper()
    var received = 0

    init(id: HTTP2StreamID, connection: ConnectionFramesHandler) {
      self.id = id
      self.connection = connection
    }

    func ping() { connection.ping(id) }
  }

  static let windowIncrement = 32_768

  private let wheel: PingWheel
  private var context: ChannelHandlerContext?
  private var streams: [HTTP2StreamID: Stream] = [:]
  private var received = 0

  init(wheel: PingWheel) { self.wheel = wheel }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    switch frame.payload {
    case .headers(let headers):
      if let stream = streams[frame.streamID] {
        if headers.endStream { end(stream, context: context) }
        return
      }
      guard headers.headers.first(name: ":path") == Wire.path else {
        let trailers = HTTP2Frame(
          streamID: frame.streamID,
          payload: .headers(.init(headers: Wire.unimplemented, endStream: true)))
        context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
        return
      }
      let stream = Stream(id: frame.streamID, connection: self)
      streams[frame.streamID] = stream
      let response = HTTP2Frame(
        streamID: frame.streamID, payload: .headers(.init(headers: Wire.responseHeaders)))
      context.write(wrapOutboundOut(response), promise: nil)
      stream.slot = wheel.add(stream)
      ping(frame.streamID)
      if headers.endStream { end(stream, context: context) }
    case .data(let data):
      let length = data.data.readableBytes + (data.paddingBytes ?? 0)
      received += length
      if received >= Self.windowIncrement {
        windowUpdate(.rootStream, received, context: context)
        received = 0
      }
      guard let stream = streams[frame.streamID] else { return }
      if case .byteBuffer(let bytes) = data.data { wheel.pongs += stream.skipper.consume(bytes) }
      if data.endStream {
        end(stream, context: context)
        return
      }
      stream.received += length
      if stream.received >= Self.windowIncrement {
        windowUpdate(stream.id, stream.received, context: context)
        stream.received = 0
      }
    case .rstStream:
      if let stream = streams.removeValue(forKey: frame.streamID) {
        wheel.remove(stream, slot: stream.slot)
      }
    default:
      break  // settings, pings, window updates, GOAWAY: the NIOHTTP2Handler's
    }
  }

  func ping(_ id: HTTP2StreamID) {
    let frame = HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(Wire.ping))))
    context?.writeAndFlush(wrapOutboundOut(frame), promise: nil)
  }

  private func windowUpdate(_ id: HTTP2StreamID, _ increment: Int, context: ChannelHandlerContext) {
    let frame = HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))
    context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
  }

  /// The client half-closed: OK trailers, and the stream is done.
  private func end(_ stream: Stream, context: ChannelHandlerContext) {
    streams.removeValue(forKey: stream.id)
    wheel.remove(stream, slot: stream.slot)
    let trailers = HTTP2Frame(
      streamID: stream.id, payload: .headers(.init(headers: Wire.okTrailers, endStream: true)))
    context.writeAndFlush(wrapOutboundOut(trailers), promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    for stream in streams.values { wheel.remove(stream, slot: stream.slot) }
    streams = [:]
    self.context = nil
    context.fireChannelInactive()
  }
}

// MARK: The server

let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
let wheels = try PingWheel.start(on: group)
let mode = options.mode

/// The connection pipeline of `mode`, with the gateway's socket options and HTTP/2 settings.
@Sendable func configure(_ channel: any Channel) throws {
  // Bound to the connection's loop, which its stream channels share.
  let wheel = wheels[ObjectIdentifier(channel.eventLoop)]!
  var connection = NIOHTTP2Handler.ConnectionConfiguration()
  connection.initialSettings = [
    HTTP2Setting(parameter: .maxConcurrentStreams, value: 1 << 20),
    HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
  ]
  let sync = channel.pipeline.syncOperations
  switch mode {
  case .multiplexer:
    _ = try sync.configureHTTP2Pipeline(
      mode: .server, connectionConfiguration: connection,
      streamConfiguration: NIOHTTP2Handler.StreamConfiguration()
    ) { stream in
      stream.eventLoop.makeCompletedFuture {
        try stream.pipeline.syncOperations.addHandler(StreamChannelHandler(wheel: wheel.value))
      }
    }
  case .frames:
    try sync.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
    try sync.addHandler(ConnectionFramesHandler(wheel: wheel.value))
  }
}

let server = try ServerBootstrap(group: group)
  .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
  .serverChannelOption(.backlog, value: 4096)
  .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
  // The gateway's receive buffers: 512 bytes to start, growing when reads fill them.
  .childChannelOption(
    .recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)
  )
  .childChannelInitializer { channel in
    channel.eventLoop.makeCompletedFuture { try configure(channel) }
  }
  .bind(host: options.host, port: options.port).wait()

printLine("H2FloorServer listening on \(options.host):\(options.port), mode \(mode), \(options.threads) event loops")

// The counts, summed over the loops every stats interval.
let interval = TimeAmount.seconds(Int64(options.statsInterval))
group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
  let counts = wheels.values.map { bound in
    bound.eventLoop.submit { (bound.value.seen, bound.value.open, bound.value.pongs) }
  }
  EventLoopFuture.whenAllSucceed(counts, on: group.next()).whenSuccess { counts in
    let seen = counts.reduce(0) { $0 + $1.0 }
    let open = counts.reduce(0) { $0 + $1.1 }
    let pongs = counts.reduce(0) { $0 + $1.2 }
    printLine("streams_seen=\(seen) open=\(open) pongs=\(pongs)")
  }
}

try server.closeFuture.wait()
