import Foundation
import GRPCCore
import GRPCInProcessTransport
import NIOCore
import NIOHPACK
import NIOHTTP2
import ServiceKit

/// Serves a call for any method but `Connect` (health, reflection) on one HTTP/2 stream of the
/// gateway's listener by passing it, message by message, to grpc-swift services running on an
/// in-process transport: those services are the ones every other server of ours runs, and
/// these calls are rare, so one task per call (owned by this handler, cancelled when the
/// stream closes) is fine here.
final class InProcessCallHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  /// Request messages waiting for the call; more than this many unread ends the call.
  static let maxQueuedRequests = 16
  /// Request headers that are the transport's, not the call's metadata.
  private static let transportHeaders: Set<String> = [
    "te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
  ]

  private let transport: InProcessTransport.Client
  private var reader: GRPCMessageReader
  private var requests: AsyncStream<[UInt8]>.Continuation?
  private var call: Task<Void, Never>?
  private var refused = false

  init(transport: InProcessTransport.Client, maxMessageBytes: Int) {
    self.transport = transport
    self.reader = GRPCMessageReader(maxMessageBytes: maxMessageBytes)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !refused else { return }
    switch unwrapInboundIn(data) {
    case .headers(let headers) where call == nil:
      start(headers.headers, context: context)
      if headers.endStream { requests?.finish() }
    case .headers(let trailers):
      if trailers.endStream { requests?.finish() }
    case .data(let data):
      if case .byteBuffer(let bytes) = data.data { reader.append(bytes) }
      do {
        while let message = try reader.next() {
          if case .dropped = requests?.yield(Array(message.readableBytesView)) {
            refuse(status: 8, message: "too many request messages unread", context: context)
            return
          }
        }
      } catch {
        refuse(status: error.status, message: error.message, context: context)
        return
      }
      if data.endStream { requests?.finish() }
    default:
      break
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    requests?.finish()
    call?.cancel()
    context.fireChannelInactive()
  }

  private func refuse(status: Int, message: String, context: ChannelHandlerContext) {
    refused = true
    requests?.finish()
    call?.cancel()
    let trailers = GRPCStatusTrailers.trailers(
      status: status, message: message, responseStarted: false)
    context.writeAndFlush(
      wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
    context.close(promise: nil)
  }

  private func start(_ headers: HPACKHeaders, context: ChannelHandlerContext) {
    let path = headers.first(name: ":path") ?? ""
    let parts = path.split(separator: "/", omittingEmptySubsequences: true)
    guard parts.count == 2 else {
      refuse(status: 12, message: "Unimplemented method '\(path)'", context: context)
      return
    }
    var metadata = Metadata()
    for (name, value, _) in headers
    where !name.hasPrefix(":") && !Self.transportHeaders.contains(name) {
      metadata.addString(value, forKey: name)
    }
    let descriptor = MethodDescriptor(
      fullyQualifiedService: String(parts[0]), method: String(parts[1]))
    let queue = AsyncStream.makeStream(
      of: [UInt8].self, bufferingPolicy: .bufferingOldest(Self.maxQueuedRequests))
    requests = queue.continuation
    let messages = queue.stream
    let channel = context.channel
    let transport = self.transport
    let request = metadata
    call = Task {
      await InProcessCall.run(
        descriptor, metadata: request, messages: messages, transport: transport,
        channel: channel)
    }
  }
}

/// One call through the in-process transport, run by an ``InProcessCallHandler``'s task.
private enum InProcessCall {
  /// The call, from its request to its status, written back to `channel` as HTTP/2 frames.
  static func run(
    _ descriptor: MethodDescriptor, metadata: Metadata, messages: AsyncStream<[UInt8]>,
    transport: InProcessTransport.Client, channel: any Channel
  ) async {
    do {
      try await transport.withStream(descriptor: descriptor, options: .defaults) { stream, _ in
        await relay(stream, metadata: metadata, messages: messages, channel: channel)
      }
    } catch {
      // The call did not start (the in-process server is shutting down).
      await writeStatus(of: error, responseStarted: false, to: channel)
    }
    try? await channel.close()
  }

  private static func relay(
    _ stream: RPCStream<InProcessTransport.Client.Inbound, InProcessTransport.Client.Outbound>,
    metadata: Metadata, messages: AsyncStream<[UInt8]>, channel: any Channel
  ) async {
    var responseStarted = false
    do {
      try await withThrowingTaskGroup { group in
        group.addTask {
          try await stream.outbound.write(.metadata(metadata))
          for await message in messages { try await stream.outbound.write(.message(message)) }
          await stream.outbound.finish()
        }
        for try await part in stream.inbound {
          switch part {
          case .metadata(let metadata):
            var headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
            add(metadata, to: &headers)
            responseStarted = true
            try await channel.writeAndFlush(
              HTTP2Frame.FramePayload.headers(.init(headers: headers)))
          case .message(let bytes):
            var buffer = channel.allocator.buffer(capacity: 5 + bytes.count)
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(UInt32(bytes.count))
            buffer.writeBytes(bytes)
            try await channel.writeAndFlush(
              HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(buffer))))
          case .status(let status, let trailing):
            var trailers = GRPCStatusTrailers.trailers(
              status: status.code.rawValue, message: status.message,
              responseStarted: responseStarted)
            add(trailing, to: &trailers)
            try await channel.writeAndFlush(
              HTTP2Frame.FramePayload.headers(.init(headers: trailers, endStream: true)))
          }
        }
        group.cancelAll()
      }
    } catch {
      await writeStatus(of: error, responseStarted: responseStarted, to: channel)
    }
  }

  private static func writeStatus(
    of error: any Error, responseStarted: Bool, to channel: any Channel
  ) async {
    let rpc = error as? RPCError
    let trailers = GRPCStatusTrailers.trailers(
      status: rpc?.code.rawValue ?? 2, message: rpc?.message ?? "\(error)",
      responseStarted: responseStarted)
    try? await channel.writeAndFlush(
      HTTP2Frame.FramePayload.headers(.init(headers: trailers, endStream: true)))
  }

  private static func add(_ metadata: Metadata, to headers: inout HPACKHeaders) {
    for (key, value) in metadata {
      switch value {
      case .string(let text): headers.add(name: key, value: text)
      case .binary(let bytes): headers.add(name: key, value: Data(bytes).base64EncodedString())
      }
    }
  }
}
