public import NIOCore

/// How gRPC names a peer in `ServerContext.remotePeer`/`localPeer`.
public enum PeerAddress {
  /// The same text grpc-swift-nio-transport puts in `ServerContext.remotePeer`/`localPeer`
  /// (`ipv4:HOST:PORT`, `ipv6:[HOST]:PORT`); a test pins the two together.
  public static func format(_ address: SocketAddress) -> String {
    switch address {
    case .v4(let v4): "ipv4:\(v4.host):\(address.port ?? 0)"
    case .v6(let v6): "ipv6:[\(v6.host)]:\(address.port ?? 0)"
    case .unixDomainSocket: "unix:\(address.pathname ?? "<unknown>")"
    }
  }
}
