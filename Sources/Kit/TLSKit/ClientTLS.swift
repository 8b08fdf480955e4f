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
    ) { config in
      config.trustRoots = .certificates([.file(path: caPath, format: .pem)])
      config.serverCertificateVerification = .fullVerification
    }
  }
}
