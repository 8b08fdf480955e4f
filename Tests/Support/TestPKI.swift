internal import Foundation
public import TLSKit

/// Certificates for one test, in a fresh temporary directory: our CA with a server, an admin
/// (`root`-like `admin`), two users, a gateway, an expired user, and a client from an unrelated
/// CA.
public struct TestPKI: Sendable {
  public let directory: String
  public let layout: CertificateLayout

  public init() throws {
    directory = NSTemporaryDirectory() + "jobworker-test-\(UUID().uuidString)"
    layout = CertificateLayout(directory: directory)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let ca = try CertificateAuthority.create()
    try ca.issued.write(certificateTo: layout.caCertificate, keyTo: layout.caKey)
    try ca.issueServer(hosts: ["localhost", "127.0.0.1"]).write(
      certificateTo: layout.serverCertificate, keyTo: layout.serverKey)
    for (name, role) in [
      ("admin", Role.admin), ("alice", .user), ("bob", .user), ("gateway", .gateway),
    ] {
      try ca.issueClient(name: name, role: role).write(
        certificateTo: layout.certificate(for: name), keyTo: layout.key(for: name))
    }
    let longAgo = Date(timeIntervalSinceNow: -30 * 24 * 3600)
    try ca.issueClient(name: "expired", role: .user, lifetime: 24 * 3600, now: longAgo).write(
      certificateTo: layout.certificate(for: "expired"), keyTo: layout.key(for: "expired"))
    let other = try CertificateAuthority.create(commonName: "some other CA")
    try other.issued.write(
      certificateTo: "\(directory)/other-ca.pem", keyTo: "\(directory)/other-ca-key.pem")
    try other.issueClient(name: "mallory", role: .admin).write(
      certificateTo: layout.certificate(for: "mallory"), keyTo: layout.key(for: "mallory"))
  }

  public func remove() {
    try? FileManager.default.removeItem(atPath: directory)
  }

  public var serverTLS: ServerTLSConfiguration {
    ServerTLSConfiguration(
      certificatePath: layout.serverCertificate, keyPath: layout.serverKey,
      trustRootsPath: layout.caCertificate)
  }

  public func client(_ name: String) -> ClientTLSFiles {
    ClientTLSFiles(
      caPath: layout.caCertificate, certificatePath: layout.certificate(for: name),
      keyPath: layout.key(for: name))
  }
}
