public import GRPCNIOTransportHTTP2Posix
public import NIOCore
import NIOPosix

extension ConnectionGuard {
  /// Binds a gRPC listener behind this guard: the admission handler on the listening channel
  /// (connections over a cap are closed before any other work), and on each connection
  /// `secure` (e.g. the TLS handler; nothing for plaintext), then the handshake deadline (so it
  /// sees decrypted bytes), then gRPC's own HTTP/2 pipeline. Both of our listener factories
  /// are this function with their own `secure` step, so the order cannot drift between them.
  public func bindListener(
    group: any EventLoopGroup, host: String, port: Int,
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator,
    tls: HTTP2ServerTransport.ConnectionConfigurator.TLS,
    secure: @escaping @Sendable (any Channel) throws -> Void = { _ in }
  ) async throws -> NIOAsyncChannel<
    HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never
  > {
    try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: Int32(clamping: limits.acceptBacklog))
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try self.addAdmissionHandler(to: channel)
        }.flatMap {
          listenerConfigurator.configure(channel: channel)
        }
      }
      .bind(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          try secure(channel)
          try self.addHandshakeDeadline(to: channel)
        }.flatMap {
          connectionConfigurator.configure(channel: channel, tls: tls)
        }
      }
  }
}
