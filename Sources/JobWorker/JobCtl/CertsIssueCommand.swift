import ArgumentParser
import ServiceKit
import TLSKit

/// `jobctl certs issue NAME --role user|admin|gateway`.
struct CertsIssueCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "issue", abstract: "Issue a client certificate (90 days) with the CA in DIR.")

  @Option(help: "Directory with ca.pem and ca-key.pem (env: JOBCTL_DIR).")
  var dir: String = Environment.string("JOBCTL_DIR", default: CertificateLayout.defaultDirectory)

  @Option(
    help:
      "Role: admin acts on every job, user only on its own; gateway only reports presence to status."
  )
  var role: Role = .user

  @Argument(help: "The user name: the certificate's common name.")
  var name: String

  func validate() throws {
    guard PeerIdentity.isValidName(name) else {
      throw ValidationError("name must be 1-64 characters from a-z A-Z 0-9 . _ @ -")
    }
  }

  func run() async throws {
    let layout = CertificateLayout(directory: dir)
    let ca: CertificateAuthority
    do {
      ca = try CertificateAuthority.load(
        certificatePath: layout.caCertificate, keyPath: layout.caKey)
    } catch {
      throw JobCtlError("cannot load the CA from \(dir) (\(error)); run `jobctl certs init` first")
    }
    try ca.issueClient(name: name, role: role).write(
      certificateTo: layout.certificate(for: name), keyTo: layout.key(for: name))
    print("client:  \(layout.certificate(for: name)) (\(name), role \(role))")
  }
}
