public import GRPCNIOTransportHTTP2Posix
public import NIOCore
import NIOPosix
public import NIOSSL

/// Server-side TLS settings: TLS 1.3 only, a client certificate signed by our CA required.
public struct MTLSServerConfiguration: Sendable {
  public var certificatePath: String
  public var keyPath: String
  public var trustRootsPath: String

  public init(certificatePath: String, keyPath: String, trustRootsPath: String) {
    self.certificatePath = certificatePath
    self.keyPath = keyPath
    self.trustRootsPath = trustRootsPath
  }

  /// The NIOSSL configuration. The stock Posix transport pins `minimumTLSVersion = .tlsv12`;
  /// this is why we bring our own listener.
  public func makeTLSConfiguration() throws -> TLSConfiguration {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    let roots: [NIOSSLCertificate]
    do {
      chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
    } catch {
      throw CertificateError("cannot load server certificate \(certificatePath): \(error)")
    }
    do {
      key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
    } catch { throw CertificateError("cannot load server key \(keyPath): \(error)") }
    do {
      roots = try NIOSSLCertificate.fromPEMFile(trustRootsPath)
    } catch { throw CertificateError("cannot load CA certificate \(trustRootsPath): \(error)") }
    guard !chain.isEmpty, !roots.isEmpty else {
      throw CertificateError(
        "empty certificate file: \(chain.isEmpty ? certificatePath : trustRootsPath)")
    }
    var tls = TLSConfiguration.makeServerConfiguration(
      certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    tls.minimumTLSVersion = .tlsv13
    tls.maximumTLSVersion = .tlsv13
    // Verify the chain to our CA; there is no host name to check for a client.
    tls.certificateVerification = .noHostnameVerification
    tls.trustRoots = .certificates(roots)
    tls.applicationProtocols = ["grpc-exp", "h2"]
    return tls
  }
}

/// Binds a TCP listener whose connections speak TLS 1.3 with mandatory client certificates,
/// for use with `HTTP2ServerTransport.Custom(listenerFactory:config:)`.
///
/// Each accepted connection gets `NIOSSLServerHandler`, then a ``PeerCertificateRecorder``
/// feeding `registry`, then gRPC's own HTTP/2 pipeline.
public struct MTLSListenerFactory: HTTP2ServerTransport.ListenerFactory {
  public let eventLoopGroup: any EventLoopGroup
  private let host: String
  private let port: Int
  private let sslContext: NIOSSLContext
  private let registry: PeerRegistry

  public init(
    host: String, port: Int, configuration: MTLSServerConfiguration, registry: PeerRegistry,
    eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) throws {
    self.host = host
    self.port = port
    self.sslContext = try NIOSSLContext(configuration: try configuration.makeTLSConfiguration())
    self.registry = registry
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
    return try await ServerBootstrap(group: eventLoopGroup)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in
        listenerConfigurator.configure(channel: channel)
      }
      .bind(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHandler(NIOSSLServerHandler(context: sslContext))
          try sync.addHandler(PeerCertificateRecorder(registry: registry))
        }.flatMap {
          connectionConfigurator.configure(channel: channel, tls: .configured(requireALPN: true))
        }
      }
  }
}

/// The gRPC server transport for the job worker: `HTTP2ServerTransport.Custom` on our listener.
public typealias MTLSServerTransport = HTTP2ServerTransport.Custom<MTLSListenerFactory>
