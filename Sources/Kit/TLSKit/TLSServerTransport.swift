public import ConnectionKit
public import GRPCNIOTransportHTTP2Posix
public import NIOCore
import NIOPosix
public import NIOSSL

/// Server-side TLS settings: TLS 1.3 only; with `clientCAPath`, a client certificate signed by
/// that CA is required (mutual TLS).
public struct ServerTLSConfiguration: Sendable, Hashable {
  public var certificatePath: String
  public var keyPath: String
  /// The CA client certificates must chain to; `nil` accepts clients without a certificate.
  public var clientCAPath: String?

  /// Mutual TLS: clients must present a certificate signed by `trustRootsPath`.
  public init(certificatePath: String, keyPath: String, trustRootsPath: String) {
    self.init(certificatePath: certificatePath, keyPath: keyPath, clientCAPath: trustRootsPath)
  }

  public init(certificatePath: String, keyPath: String, clientCAPath: String?) {
    self.certificatePath = certificatePath
    self.keyPath = keyPath
    self.clientCAPath = clientCAPath
  }

  /// Builds the setting from optional flag values: none given is plaintext (`nil`); a
  /// certificate needs its key; a client CA needs both. Errors name the flags (`--PREFIX-cert`
  /// and so on; `prefix` is e.g. `tls`).
  public static func from(
    certificatePath: String?, keyPath: String?, clientCAPath: String?, prefix: String
  ) throws(CertificateError) -> ServerTLSConfiguration? {
    switch (certificatePath, keyPath) {
    case (nil, nil):
      if clientCAPath != nil {
        throw CertificateError("--\(prefix)-client-ca needs --\(prefix)-cert and --\(prefix)-key")
      }
      return nil
    case (let certificate?, let key?):
      return ServerTLSConfiguration(
        certificatePath: certificate, keyPath: key, clientCAPath: clientCAPath)
    default:
      throw CertificateError("--\(prefix)-cert and --\(prefix)-key must be given together")
    }
  }

  /// Whether clients must present a certificate.
  public var isMutual: Bool { clientCAPath != nil }

  /// The NIOSSL configuration. The stock Posix transport pins `minimumTLSVersion = .tlsv12`;
  /// this is why we bring our own listener.
  public func makeTLSConfiguration() throws -> TLSConfiguration {
    let chain = try PEMFile.certificates(at: certificatePath, what: "server certificate")
    let key: NIOSSLPrivateKey
    do {
      key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
    } catch { throw CertificateError("cannot load server key \(keyPath): \(error)") }
    var tls = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    tls.minimumTLSVersion = .tlsv13
    tls.maximumTLSVersion = .tlsv13
    tls.applicationProtocols = ["grpc-exp", "h2"]
    if let clientCAPath {
      // Verify the chain to our CA; there is no host name to check for a client.
      tls.certificateVerification = .noHostnameVerification
      tls.trustRoots = .certificates(
        try PEMFile.certificates(at: clientCAPath, what: "CA certificate"))
    } else {
      tls.certificateVerification = .none
    }
    return tls
  }
}

/// Binds a TCP listener whose connections speak TLS 1.3 (with mandatory client certificates
/// when the configuration is mutual), for `HTTP2ServerTransport.Custom(listenerFactory:config:)`.
///
/// A `ConnectionGuard` admits or refuses each accepted connection before any TLS work. Each
/// admitted connection gets `NIOSSLServerHandler`, then (given a registry) a
/// ``PeerCertificateRecorder`` feeding it, then the guard's handshake deadline (so that one
/// deadline covers the TLS handshake and the HTTP/2 preface), then gRPC's own HTTP/2 pipeline.
public struct TLSListenerFactory: HTTP2ServerTransport.ListenerFactory {
  public let eventLoopGroup: any EventLoopGroup
  private let host: String
  private let port: Int
  private let sslContext: NIOSSLContext
  private let registry: PeerRegistry?
  private let connectionGuard: ConnectionGuard

  public init(
    host: String, port: Int, configuration: ServerTLSConfiguration, registry: PeerRegistry?,
    connectionGuard: ConnectionGuard = ConnectionGuard(),
    eventLoopGroup: any EventLoopGroup = ProcessEventLoops.group
  ) throws {
    precondition(registry == nil || configuration.isMutual, "a peer registry needs mutual TLS")
    self.host = host
    self.port = port
    self.sslContext = try NIOSSLContext(configuration: try configuration.makeTLSConfiguration())
    self.registry = registry
    self.connectionGuard = connectionGuard
    self.eventLoopGroup = eventLoopGroup
  }

  public func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<
    HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never
  > {
    let sslContext = self.sslContext
    let registry = self.registry
    return try await connectionGuard.bindListener(
      group: eventLoopGroup, host: host, port: port,
      listenerConfigurator: listenerConfigurator, connectionConfigurator: connectionConfigurator,
      tls: .configured(requireALPN: true)
    ) { channel in
      let sync = channel.pipeline.syncOperations
      try sync.addHandler(NIOSSLServerHandler(context: sslContext))
      if let registry { try sync.addHandler(PeerCertificateRecorder(registry: registry)) }
    }
  }
}

/// A gRPC server transport on our TLS 1.3 listener.
public typealias TLSServerTransport = HTTP2ServerTransport.Custom<TLSListenerFactory>

extension PEMFile {
  /// Every certificate in a PEM file; an unreadable or empty file is an error naming `what`.
  static func certificates(at path: String, what: String) throws -> [NIOSSLCertificate] {
    let certificates: [NIOSSLCertificate]
    do {
      certificates = try NIOSSLCertificate.fromPEMFile(path)
    } catch { throw CertificateError("cannot load \(what) \(path): \(error)") }
    guard !certificates.isEmpty else { throw CertificateError("empty \(what) file: \(path)") }
    return certificates
  }
}
