public import GRPCNIOTransportHTTP2Posix
public import NIOCore
import NIOPosix

/// Binds a plaintext TCP listener for `HTTP2ServerTransport.Custom(listenerFactory:config:)`,
/// guarded by a ``ConnectionGuard``. It replaces the stock `HTTP2ServerTransport.Posix`, whose
/// listener admits every connection and lets a silent one stay open indefinitely.
public struct PlaintextListenerFactory: HTTP2ServerTransport.ListenerFactory {
  public let eventLoopGroup: any EventLoopGroup
  private let host: String
  private let port: Int
  private let connectionGuard: ConnectionGuard

  public init(
    host: String, port: Int, connectionGuard: ConnectionGuard = ConnectionGuard(),
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) {
    self.host = host
    self.port = port
    self.connectionGuard = connectionGuard
    self.eventLoopGroup = eventLoopGroup
  }

  public func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<
    HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never
  > {
    let connectionGuard = self.connectionGuard
    return try await ServerBootstrap(group: eventLoopGroup)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try connectionGuard.addAdmissionHandler(to: channel)
        }.flatMap {
          listenerConfigurator.configure(channel: channel)
        }
      }
      .bind(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          try connectionGuard.addHandshakeDeadline(to: channel)
        }.flatMap {
          connectionConfigurator.configure(channel: channel, tls: .none)
        }
      }
  }
}

/// A gRPC server transport on a guarded plaintext listener.
public typealias PlaintextServerTransport = HTTP2ServerTransport.Custom<PlaintextListenerFactory>
