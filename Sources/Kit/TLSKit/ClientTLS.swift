public import GRPCNIOTransportHTTP2Posix

/// The files a client needs for mutual TLS.
public struct ClientTLSFiles: Sendable, Hashable {
  public var caPath: String
  public var certificatePath: String
  public var keyPath: String

  public init(caPath: String, certificatePath: String, keyPath: String) {
    self.caPath = caPath
    self.certificatePath = certificatePath
    self.keyPath = keyPath
  }

  /// Transport security for the stock Posix client: our certificate and key, the server
  /// verified against our CA (host name included). The stock client allows TLS 1.2, but our
  /// server only speaks 1.3, so every connection negotiates 1.3.
  public var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
    .mTLS(
      certificateChain: [.file(path: certificatePath, format: .pem)],
      privateKey: .file(path: keyPath, format: .pem)
    ) { $0.verifyServer(caPath: caPath) }
  }
}

/// How a client secures its connections: plaintext (the loopback default), TLS verifying the
/// server against a CA, or mutual TLS.
public enum ClientSecurity: Sendable, Hashable {
  case plaintext
  /// TLS; the server's certificate must chain to the CA at this path and name the host.
  case tls(caPath: String)
  case mutualTLS(ClientTLSFiles)

  /// Builds the setting from optional flag values; the certificate and key come together,
  /// and need a CA. Errors name the flags (`--PREFIX-ca` and so on).
  public static func from(
    caPath: String?, certificatePath: String?, keyPath: String?, prefix flag: String
  ) throws(CertificateError) -> ClientSecurity {
    switch (caPath, certificatePath, keyPath) {
    case (nil, nil, nil): return .plaintext
    case (let ca?, nil, nil): return .tls(caPath: ca)
    case (let ca?, let certificate?, let key?):
      return .mutualTLS(ClientTLSFiles(caPath: ca, certificatePath: certificate, keyPath: key))
    case (nil, _, _):
      throw CertificateError("--\(flag)-cert and --\(flag)-key need --\(flag)-ca")
    default:
      throw CertificateError("--\(flag)-cert and --\(flag)-key must be given together")
    }
  }

  public var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
    switch self {
    case .plaintext: return .plaintext
    case .tls(let caPath): return .tls { $0.verifyServer(caPath: caPath) }
    case .mutualTLS(let files): return files.transportSecurity
    }
  }
}

extension HTTP2ClientTransport.Posix.TransportSecurity.TLS {
  /// Trusts only our CA at `caPath` and verifies the server's chain and host name against it.
  fileprivate mutating func verifyServer(caPath: String) {
    trustRoots = .certificates([.file(path: caPath, format: .pem)])
    serverCertificateVerification = .fullVerification
  }
}
