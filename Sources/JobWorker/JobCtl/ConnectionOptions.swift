public import ArgumentParser
import Foundation
public import ServiceKit
public import TLSKit

/// How `jobctl` reaches and authenticates to the server. Every flag has an environment twin.
public struct ConnectionOptions: ParsableArguments, Sendable {
  @Option(help: "Server address HOST:PORT (env: JOBCTL_SERVER).")
  public var server: HostPort = Environment.value(
    "JOBCTL_SERVER", default: HostPort(host: "127.0.0.1", port: 50053))

  @Option(help: "Directory holding the certificates `jobctl certs init` made (env: JOBCTL_DIR).")
  public var dir: String = Environment.string(
    "JOBCTL_DIR", default: CertificateLayout.defaultDirectory)

  @Option(help: "Identity to use: picks DIR/USER.pem and DIR/USER-key.pem (env: JOBCTL_USER).")
  public var user: String = Environment.string("JOBCTL_USER", default: "admin")

  @Option(
    help:
      "CA certificate that signed the server's certificate; default DIR/ca.pem (env: JOBCTL_CA).")
  public var ca: String = Environment.string("JOBCTL_CA", default: "")

  @Option(help: "Client certificate; default DIR/USER.pem (env: JOBCTL_CERT).")
  public var cert: String = Environment.string("JOBCTL_CERT", default: "")

  @Option(help: "Client private key; default DIR/USER-key.pem (env: JOBCTL_KEY).")
  public var key: String = Environment.string("JOBCTL_KEY", default: "")

  @Option(help: "Output format: text or json (env: JOBCTL_OUTPUT).")
  public var output: OutputFormat = Environment.value("JOBCTL_OUTPUT", default: .text)

  @Option(
    parsing: .unconditional,
    help: "Seconds each call may take, except following output (env: JOBCTL_TIMEOUT).")
  public var timeout: Int = Environment.value("JOBCTL_TIMEOUT", default: 10)

  public init() {}

  public func validate() throws {
    guard (1...3600).contains(timeout) else {
      throw ValidationError("--timeout must be between 1 and 3600 seconds")
    }
  }

  /// The certificate files to use, flags first, then the `--dir`/`--user` layout.
  public var files: ClientTLSFiles {
    let layout = CertificateLayout(directory: dir)
    return ClientTLSFiles(
      caPath: ca.nilIfEmpty ?? layout.caCertificate,
      certificatePath: cert.nilIfEmpty ?? layout.certificate(for: user),
      keyPath: key.nilIfEmpty ?? layout.key(for: user))
  }

  var connection: JobWorkerConnection {
    JobWorkerConnection(server: server, files: files, timeout: .seconds(timeout))
  }
}

/// How results are printed.
public enum OutputFormat: String, Sendable, CaseIterable, ExpressibleByArgument {
  case text
  case json
}
