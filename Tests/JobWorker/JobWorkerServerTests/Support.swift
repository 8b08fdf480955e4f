import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import JobWorkerProtos
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceKit
import TLSKit
import TestSupport
import Testing

let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs a job worker client call with `files`, against `port` on 127.0.0.1.
func withJobClient<T: Sendable>(
  port: Int, files: ClientTLSFiles, host: String = "127.0.0.1",
  _ body: @Sendable (Jobworker_V1_JobWorker.Client<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
  let transport = try HTTP2ClientTransport.Posix(
    target: HostPort(host: host, port: port).resolvableTarget,
    transportSecurity: files.transportSecurity)
  return try await withGRPCClient(transport: transport) { client in
    try await body(Jobworker_V1_JobWorker.Client(wrapping: client))
  }
}

/// Options for test calls: fail fast, bounded. The deadline bounds how long a failing test
/// waits, not a latency claim: a call includes a TLS connection, and under a parallel build
/// on 2 cores 10 s was once not enough.
var testCallOptions: CallOptions {
  var options = CallOptions.defaults
  options.timeout = .seconds(30)
  options.waitForReady = false
  return options
}

// MARK: Raw TLS probe

enum ProbeOutcome: Equatable {
  /// The server sent HTTP/2 bytes after the handshake: the connection was accepted.
  case accepted
  /// The connection failed: a TLS alert, an error, or a close before any data.
  case refused(String)

  var isRefused: Bool { if case .refused = self { true } else { false } }
}

/// Connects with NIOSSL directly (so TLS versions can be pinned, which the gRPC transport
/// cannot do), sends the HTTP/2 preface, and reports whether the server answered.
///
/// TLS 1.3 clients finish their side of the handshake before the server has checked the
/// client certificate, so "refused" is decided by what follows: an alert and a close, never a
/// single byte of HTTP/2.
func probeTLS(port: Int, configuration: TLSConfiguration) async throws -> ProbeOutcome {
  let context = try NIOSSLContext(configuration: configuration)
  let group = MultiThreadedEventLoopGroup.singleton
  let promise = group.any().makePromise(of: ProbeOutcome.self)
  let channel = try await ClientBootstrap(group: group)
    .connectTimeout(.seconds(5))
    .channelInitializer { channel in
      channel.eventLoop.makeCompletedFuture {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
        try sync.addHandler(ProbeHandler(promise: promise))
      }
    }
    .connect(host: "127.0.0.1", port: port).get()
  let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
  var buffer = channel.allocator.buffer(string: preface)
  // An empty SETTINGS frame.
  buffer.writeBytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
  channel.writeAndFlush(buffer, promise: nil)
  // A bound on a failing probe, not a performance claim: a refused peer is answered at once
  // (an alert and a close), and under a parallel build an accepted one took over 5 s.
  channel.eventLoop.scheduleTask(in: .seconds(30)) {
    promise.succeed(.refused("timeout"))
  }
  let outcome = try await promise.futureResult.get()
  try? await channel.close()
  return outcome
}

private final class ProbeHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  let promise: EventLoopPromise<ProbeOutcome>

  init(promise: EventLoopPromise<ProbeOutcome>) { self.promise = promise }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    promise.succeed(.accepted)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    promise.succeed(.refused(String(describing: error)))
    context.close(promise: nil)
  }

  func channelInactive(context: ChannelHandlerContext) {
    promise.succeed(.refused("closed"))
  }
}

func clientTLSConfiguration(
  pki: TestPKI, user: String?, minimum: TLSVersion = .tlsv12, maximum: TLSVersion = .tlsv13
) throws -> TLSConfiguration {
  var tls = TLSConfiguration.makeClientConfiguration()
  tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.layout.caCertificate))
  if let user {
    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(pki.layout.certificate(for: user))
      .map { .certificate($0) }
    tls.privateKey = .privateKey(
      try NIOSSLPrivateKey(file: pki.layout.key(for: user), format: .pem))
  }
  tls.minimumTLSVersion = minimum
  tls.maximumTLSVersion = maximum
  tls.applicationProtocols = ["h2"]
  return tls
}
