public import ArgumentParser
import Foundation
import ServiceKit
public import TLSKit

/// `jobctl certs init [--dir DIR] [--hosts …]`.
struct CertsInitCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "init",
    abstract: "Create a CA (1 year), a server certificate and client certificates (90 days).",
    discussion: """
      Writes DIR/ca.pem, ca-key.pem, server.pem, server-key.pem and NAME.pem, NAME-key.pem for
      each client. Keys are 0600, the directory 0700. Refuses to replace an existing CA unless
      --force.
      """)

  @Option(help: "Where to write (env: JOBCTL_DIR).")
  var dir: String = Environment.string("JOBCTL_DIR", default: CertificateLayout.defaultDirectory)

  @Option(parsing: .upToNextOption, help: "Host names and IP addresses of the server.")
  var hosts: [String] = ["localhost", "127.0.0.1"]

  @Option(
    parsing: .upToNextOption,
    help: "Client identities to create, NAME:ROLE (role admin|user|gateway).")
  var clients: [ClientSpec] = [
    ClientSpec(name: "admin", role: .admin), ClientSpec(name: "alice", role: .user),
  ]

  @Flag(help: "Replace an existing CA (every certificate it issued stops working).")
  var force = false

  func run() async throws {
    let layout = CertificateLayout(directory: dir)
    if !force && FileManager.default.fileExists(atPath: layout.caCertificate) {
      throw JobCtlError(
        "\(layout.caCertificate) exists; use `jobctl certs issue` to add users, or --force to "
          + "replace the CA")
    }
    try CertificateFiles.makeDirectory(dir)
    let ca = try CertificateAuthority.create()
    try ca.issued.write(certificateTo: layout.caCertificate, keyTo: layout.caKey)
    try ca.issueServer(hosts: hosts).write(
      certificateTo: layout.serverCertificate, keyTo: layout.serverKey)
    print("CA:      \(layout.caCertificate)")
    print("server:  \(layout.serverCertificate) (\(hosts.joined(separator: ", ")))")
    for client in clients {
      try ca.issueClient(name: client.name, role: client.role).write(
        certificateTo: layout.certificate(for: client.name), keyTo: layout.key(for: client.name))
      print(
        "client:  \(layout.certificate(for: client.name)) (\(client.name), role \(client.role))")
    }
  }
}

/// `NAME:ROLE` on the command line.
struct ClientSpec: ExpressibleByArgument {
  var name: String
  var role: Role

  init(name: String, role: Role) {
    self.name = name
    self.role = role
  }

  init?(argument: String) {
    let parts = argument.split(separator: ":", maxSplits: 1).map(String.init)
    guard parts.count == 2, let role = Role(rawValue: parts[1]) else { return nil }
    self.init(name: parts[0], role: role)
  }
}

extension Role: ExpressibleByArgument {}

/// Filesystem helpers for certificate directories.
enum CertificateFiles {
  /// Creates `path` (and parents) 0700: it holds private keys.
  static func makeDirectory(_ path: String) throws {
    do {
      try FileManager.default.createDirectory(
        atPath: path, withIntermediateDirectories: true,
        attributes: [.posixPermissions: 0o700])
    } catch {
      throw JobCtlError("cannot create \(path): \(error.localizedDescription)")
    }
  }
}
