import Foundation
import NIOPosix
import Testing

@testable import TLSKit

@Suite("Peer registry")
struct PeerRegistryTests {
  let loop = MultiThreadedEventLoopGroup.singleton.next()

  @Test("a late close of an old connection never erases a newer connection's entry")
  func staleRemoval() throws {
    let registry = PeerRegistry()
    let key = PeerRegistry.Key(local: "ipv4:127.0.0.1:50053", remote: "ipv4:127.0.0.1:41184")
    // Both objects stay alive, so their identifiers differ (like two live channels).
    let oldChannel = NSObject()
    let newChannel = NSObject()
    let old = ObjectIdentifier(oldChannel)
    let new = ObjectIdentifier(newChannel)
    registry.record(
      .success(PeerIdentity(name: "alice", role: .user)), key: key, connection: old,
      eventLoop: loop)
    registry.record(
      .success(PeerIdentity(name: "bob", role: .user)), key: key, connection: new, eventLoop: loop)
    registry.remove(key: key, connection: old)
    let identity = try registry.identity(localPeer: key.local, remotePeer: key.remote)
    #expect(identity.name == "bob")
    registry.remove(key: key, connection: new)
    #expect(registry.count == 0)
    withExtendedLifetime((oldChannel, newChannel)) {}
    #expect(throws: PeerIdentityError.self) {
      try registry.identity(localPeer: key.local, remotePeer: key.remote)
    }
  }

  @Test("an unusable certificate is recorded as its reason, not as an identity")
  func failureRecorded() {
    let registry = PeerRegistry()
    let key = PeerRegistry.Key(local: "l", remote: "r")
    let reason = PeerIdentityError(code: .invalidRole, message: "no role")
    registry.record(
      .failure(reason), key: key, connection: ObjectIdentifier(NSObject()), eventLoop: loop)
    do {
      _ = try registry.identity(localPeer: "l", remotePeer: "r")
      Issue.record("expected a failure")
    } catch {
      #expect(error.code == .invalidRole)
    }
  }
}
