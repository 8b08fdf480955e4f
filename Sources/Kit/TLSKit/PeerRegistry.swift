public import GRPCCore
import ConnectionKit
public import NIOCore
import NIOSSL
import NIOTLS
import Synchronization
import X509

/// The verified client certificate of every live connection, keyed by the connection's
/// addresses, so that RPC handlers can learn who is calling.
///
/// Why a registry: under `HTTP2ServerTransport.Custom`, `ServerContext.transportSpecific` is
/// always nil, but `ServerContext.localPeer`/`remotePeer` are the connection's addresses
/// (`ipv4:127.0.0.1:41184`). A ``PeerCertificateRecorder`` that the listener puts right after
/// the TLS handler records the certificate when the handshake completes (before any HTTP/2
/// frame can arrive) and removes it when the connection closes. A client cannot influence
/// the key (the kernel's view of the TCP 4-tuple) nor the value (what BoringSSL verified), and
/// nothing a client sends in metadata is ever consulted.
public final class PeerRegistry: Sendable {
  struct Key: Hashable {
    var local: String
    var remote: String
  }

  private struct Entry {
    var connection: ObjectIdentifier
    var identity: Result<PeerIdentity, PeerIdentityError>
    var eventLoop: any EventLoop
  }

  private let entries = Mutex<[Key: Entry]>([:])

  public init() {}

  /// The identity of the caller of an RPC.
  public func identity(for context: ServerContext) throws(PeerIdentityError) -> PeerIdentity {
    try identity(localPeer: context.localPeer, remotePeer: context.remotePeer)
  }

  public func identity(
    localPeer: String, remotePeer: String
  ) throws(PeerIdentityError) -> PeerIdentity {
    let key = Key(local: localPeer, remote: remotePeer)
    guard let entry = entries.withLock({ $0[key] }) else {
      throw PeerIdentityError(
        code: .noCertificate, message: "no verified client certificate for this connection")
    }
    return try entry.identity.get()
  }

  /// The caller of an RPC if its certificate has one of `roles`, else the gRPC error to
  /// answer: `UNAUTHENTICATED` without a verified certificate, `PERMISSION_DENIED` for an
  /// unusable identity or another role (naming the roles this API accepts). The one rule of
  /// every mTLS API of ours (the job API, presence ingest).
  public func caller(
    of context: ServerContext, roles: Set<Role>, api: String
  ) throws(RPCError) -> PeerIdentity {
    let identity: PeerIdentity
    do {
      identity = try self.identity(for: context)
    } catch {
      switch error.code {
      case .noCertificate: throw RPCError(code: .unauthenticated, message: error.message)
      default: throw RPCError(code: .permissionDenied, message: error.message)
      }
    }
    guard roles.contains(identity.role) else {
      let accepted = roles.map(\.rawValue).sorted().joined(separator: " or ")
      throw RPCError(
        code: .permissionDenied,
        message:
          "\(identity.name) has role \(identity.role), which may not use \(api): it needs role \(accepted)"
      )
    }
    return identity
  }

  /// The event loop that does the I/O of the caller's connection (and of all its HTTP/2
  /// streams), or nil once the connection closed. A handler that writes faster than that loop
  /// sends can pace itself on it (see `JobWorkerAPI`'s output streams).
  public func eventLoop(for context: ServerContext) -> (any EventLoop)? {
    entries.withLock { $0[Key(local: context.localPeer, remote: context.remotePeer)]?.eventLoop }
  }

  /// Live connections with a recorded certificate (for tests and metrics).
  public var count: Int { entries.withLock { $0.count } }

  func record(
    _ identity: Result<PeerIdentity, PeerIdentityError>, key: Key, connection: ObjectIdentifier,
    eventLoop: any EventLoop
  ) {
    entries.withLock {
      $0[key] = Entry(connection: connection, identity: identity, eventLoop: eventLoop)
    }
  }

  /// Removes the entry only if it still belongs to `connection`, so a late close of an old
  /// connection can never erase the entry of a newer one that reuses the same addresses.
  func remove(key: Key, connection: ObjectIdentifier) {
    entries.withLock { entries in
      if entries[key]?.connection == connection { entries[key] = nil }
    }
  }
}

/// Records the peer certificate of one connection in a ``PeerRegistry``; sits right after
/// `NIOSSLServerHandler` in the connection's pipeline.
final class PeerCertificateRecorder: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = NIOAny

  private let registry: PeerRegistry
  private var key: PeerRegistry.Key?

  init(registry: PeerRegistry) {
    self.registry = registry
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case .handshakeCompleted = event as? TLSUserEvent {
      recordPeer(context: context)
    }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    forget(context: context)
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    forget(context: context)
  }

  private func recordPeer(context: ChannelHandlerContext) {
    guard let local = context.channel.localAddress, let remote = context.channel.remoteAddress
    else { return }
    let key = PeerRegistry.Key(local: PeerAddress.format(local), remote: PeerAddress.format(remote))
    let identity: Result<PeerIdentity, PeerIdentityError>
    do {
      // BoringSSL verified this certificate against our CA during the handshake
      // (certificate verification is `.noHostnameVerification`, never `.none`).
      guard let peer = try context.pipeline.syncOperations.nioSSL_peerCertificate() else {
        throw PeerIdentityError(code: .noCertificate, message: "the client sent no certificate")
      }
      let certificate = try Certificate(derEncoded: try peer.toDERBytes())
      identity = .success(try PeerIdentity(certificate: certificate))
    } catch let error as PeerIdentityError {
      identity = .failure(error)
    } catch {
      identity = .failure(
        PeerIdentityError(
          code: .noCertificate, message: "unreadable client certificate: \(error)"))
    }
    self.key = key
    registry.record(
      identity, key: key, connection: ObjectIdentifier(context.channel),
      eventLoop: context.eventLoop)
  }

  private func forget(context: ChannelHandlerContext) {
    guard let key else { return }
    self.key = nil
    registry.remove(key: key, connection: ObjectIdentifier(context.channel))
  }
}
