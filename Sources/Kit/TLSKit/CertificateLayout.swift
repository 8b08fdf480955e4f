import Foundation

/// Where `jobctl certs init` puts files, and where the other commands look for them.
public struct CertificateLayout: Sendable {
  public var directory: String

  public init(directory: String) { self.directory = directory }

  public static var defaultDirectory: String {
    // getenv: one variable, not a copy of the whole environment (see ServiceKit's
    // `Environment.raw`, which TLSKit cannot use).
    let home = getenv("HOME").map { String(cString: $0) } ?? NSHomeDirectory()
    let config = getenv("XDG_CONFIG_HOME").map { String(cString: $0) } ?? "\(home)/.config"
    return "\(config)/jobctl"
  }

  public var caCertificate: String { "\(directory)/ca.pem" }
  public var caKey: String { "\(directory)/ca-key.pem" }
  public var serverCertificate: String { "\(directory)/server.pem" }
  public var serverKey: String { "\(directory)/server-key.pem" }
  public func certificate(for name: String) -> String { "\(directory)/\(name).pem" }
  public func key(for name: String) -> String { "\(directory)/\(name)-key.pem" }
}
