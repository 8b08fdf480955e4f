import NIOCore

/// Closes a new connection unless its HTTP/2 client preface arrives in time.
///
/// It sits after the TLS handler (where there is one), so it sees bytes only once the TLS
/// handshake is complete: one deadline covers the handshake and the preface. The preface is
/// the 24-byte magic `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` followed by a SETTINGS frame (a
/// 9-byte header at least), so a client that has sent fewer than 33 bytes has not finished
/// it. Checking the content is left to the HTTP/2 handler behind, which closes the connection
/// on a bad preface. Once enough bytes have passed, the handler removes itself.
final class HandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  /// The client preface: the magic plus a SETTINGS frame header.
  static let prefaceBytes = 24 + 9

  private let timeout: TimeAmount
  private let onTimeout: @Sendable () -> Void
  private var received = 0
  private var timer: Scheduled<Void>?

  init(timeout: TimeAmount, onTimeout: @escaping @Sendable () -> Void) {
    self.timeout = timeout
    self.onTimeout = onTimeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    // Added by the child channel initializer, right after `accept`: the clock starts there.
    // Closing the channel removes this handler, which cancels the timer.
    timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [onTimeout] in
      onTimeout()
      context.close(promise: nil)
    }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    received += unwrapInboundIn(data).readableBytes
    context.fireChannelRead(data)
    if received >= Self.prefaceBytes, timer != nil {
      timer?.cancel()
      timer = nil
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
  }
}
