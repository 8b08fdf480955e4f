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
    eventLoopGroup: any EventLoopGroup = ProcessEventLoops.group
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
    try await connectionGuard.bindListener(
      group: eventLoopGroup, host: host, port: port,
      listenerConfigurator: listenerConfigurator, connectionConfigurator: connectionConfigurator,
      tls: .none)
  }
}

/// A gRPC server transport on a guarded plaintext listener.
public typealias PlaintextServerTransport = HTTP2ServerTransport.Custom<PlaintextListenerFactory>
