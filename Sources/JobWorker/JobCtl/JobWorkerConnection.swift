import ConnectionKit
import Foundation
public import GRPCCore
public import GRPCNIOTransportHTTP2
public import JobWorkerProtos
public import ServiceKit
public import TLSKit
import X509

/// A job worker client over mutual TLS, as `jobctl` and the demo use it: every call has a
/// deadline (except following output), and every failure becomes a ``JobCtlError`` that says
/// what failed and how to fix it.
public struct JobWorkerConnection: Sendable {
  public typealias Client = Jobworker_V1_JobWorker.Client<HTTP2ClientTransport.Posix>

  public var server: HostPort
  public var files: ClientTLSFiles
  public var timeout: Duration

  public init(server: HostPort, files: ClientTLSFiles, timeout: Duration = .seconds(10)) {
    self.server = server
    self.files = files
    self.timeout = timeout
  }

  /// Options of a bounded call: the deadline, and fail fast when the server is unreachable
  /// instead of waiting for it to come up.
  public var callOptions: CallOptions {
    var options = CallOptions.defaults
    options.timeout = timeout
    options.waitForReady = false
    return options
  }

  /// Options of an output stream: no call deadline, because the transfer lasts as long as the
  /// output is large, the reader slow, or (following) the job alive; `jobctl` bounds
  /// connecting and the first response instead (`withFirstResponseDeadline`).
  public var followOptions: CallOptions {
    var options = CallOptions.defaults
    options.waitForReady = false
    // The server sends output in messages of up to 255 KiB (its `maxChunkBytes`). Stated
    // here rather than left to the transport's default: grpc-swift-nio-transport 2.x bounds
    // the responses it decodes by `maxRequestMessageBytes`, not `maxResponseMessageBytes`.
    options.maxRequestMessageBytes = Self.maxOutputMessageBytes
    options.maxResponseMessageBytes = Self.maxOutputMessageBytes
    return options
  }

  /// The largest output message `jobctl` accepts: 4 MiB, grpc-swift's default and 16 times
  /// the server's default message size, so that a server configured with larger messages
  /// still works; a message over it fails the stream with `resourceExhausted`.
  public static let maxOutputMessageBytes = 4 << 20

  /// The HTTP/2 flow-control window we grant the server per stream: how much output may be in
  /// flight towards us when we stop reading (standard output blocked). grpc-swift's default
  /// is 8 MiB, and what a window admits was measured to be held several times over (messages
  /// waiting in gRPC's inbound buffer appear to keep whole receive buffers alive).
  /// Measured with `jobctl logs` of 48 MiB into a pipe nobody reads: 8 MiB window, RSS +36 and
  /// +358 MiB; 1 MiB window, +2.1 and +6.3 MiB. 1 MiB still fills 100 Mbit/s at 80 ms RTT.
  public static let streamWindowBytes = 1 << 20

  /// The largest HTTP/2 frame we accept (`SETTINGS_MAX_FRAME_SIZE`): 1 MiB instead of the
  /// protocol's default 16 KiB, so that the server sends each output message (32 KiB) as one
  /// DATA frame instead of three, and `jobctl` parses a third of the frames. It does not
  /// change what a blocked `jobctl` holds (the window bounds that): 20 runs of
  /// `CLIHostileTests`' blocked standard output grew 0.2–6.2 MiB, as with 16 KiB frames.
  /// 64 MiB `jobctl logs` measured in docs/benchmarks.md ("Job worker: output path").
  public static let maxFrameBytes = 1 << 20

  /// The most bytes handed to the HTTP/2 frame decoder at once (``HTTP2FrameAligner``), which
  /// bounds the buffer each DATA frame it hands on keeps alive. With whole reads (up to a few
  /// hundred KiB from TLS) that buffer grew by doubling to 1–4 MiB, and a blocked `jobctl`
  /// held 20–45 MiB with 255 KiB messages; with 16 KiB steps 9–10 MiB, and no slower
  /// (docs/benchmarks.md, "The client's receive path").
  public static let maxDecoderReadBytes = 16 * 1024

  /// Connects, runs `body`, disconnects. Local problems (missing or expired certificate) are
  /// reported before any network traffic.
  public func withClient<Result: Sendable>(
    _ body: @Sendable (Client) async throws -> Result
  ) async throws -> Result {
    try preflight()
    do {
      let transport = try HTTP2ClientTransport.Posix(
        target: server.resolvableTarget, transportSecurity: files.transportSecurity,
        config: .defaults { config in
          config.connection.maxIdleTime = nil
          config.backoff.initial = .milliseconds(100)
          config.http2.targetWindowSize = Self.streamWindowBytes
          config.http2.maxFrameSize = Self.maxFrameBytes
          // The only hook grpc-swift-nio-transport offers into a connection's pipeline; it runs
          // on the channel's event loop once gRPC's own handlers are in place.
          config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            channel.eventLoop.makeCompletedFuture {
              try channel.pipeline.syncOperations.addHTTP2FrameAligner(
                maximumFrameLength: Self.maxFrameBytes, maximumReadLength: Self.maxDecoderReadBytes)
            }
          }
        })
      return try await withGRPCClient(transport: transport) { client in
        try await body(Client(wrapping: client))
      }
    } catch let error as JobCtlError {
      throw error
    } catch {
      throw JobCtlError(translating: error, connection: self)
    }
  }

  /// Checks the files exist and the client certificate is currently valid, so that the most
  /// common mistakes get a precise message instead of a generic handshake failure.
  func preflight() throws {
    for (path, what) in [
      (files.caPath, "CA certificate"), (files.certificatePath, "client certificate"),
      (files.keyPath, "client key"),
    ] where !FileManager.default.isReadableFile(atPath: path) {
      throw JobCtlError(
        "cannot read \(what) \(path); create certificates with `jobctl certs init` or pass "
          + "--dir/--user or --ca/--cert/--key")
    }
    let certificate: Certificate
    do {
      certificate = try Certificate(pemEncoded: try PEMFile.read(files.certificatePath))
    } catch {
      throw JobCtlError("\(files.certificatePath) is not a PEM certificate: \(error)")
    }
    let now = Date()
    if certificate.notValidAfter < now {
      throw JobCtlError(
        "client certificate \(files.certificatePath) expired on "
          + "\(certificate.notValidAfter.formatted(.iso8601)); issue a new one with "
          + "`jobctl certs issue NAME --role user|admin`")
    }
    if certificate.notValidBefore > now {
      throw JobCtlError(
        "client certificate \(files.certificatePath) is not valid before "
          + "\(certificate.notValidBefore.formatted(.iso8601)); check this machine's clock")
    }
  }
}

/// A failed `jobctl` operation, as one line for a human.
public struct JobCtlError: Error, CustomStringConvertible, Sendable {
  public var message: String
  /// The gRPC status code, when the server answered with one.
  public var code: RPCError.Code?

  public init(_ message: String, code: RPCError.Code? = nil) {
    self.message = message
    self.code = code
  }

  public var description: String { message }

  /// Turns a transport or RPC error into advice. TLS failures surface as `unavailable` with
  /// the BoringSSL reason deep in the cause chain, so that chain is searched for known reasons.
  init(translating error: any Error, connection: JobWorkerConnection) {
    let server = connection.server
    guard let rpc = error as? RPCError else {
      self.init("cannot talk to the job worker at \(server): \(Self.flatten(error))")
      return
    }
    let detail = Self.flatten(error)
    let lower = detail.lowercased()
    switch rpc.code {
    case .unavailable:
      if lower.contains("certificate_verify_failed") || lower.contains("unable to get local issuer")
        || lower.contains("self signed") || lower.contains("self-signed")
      {
        self.init(
          "TLS handshake failed: the server's certificate is not signed by "
            + "\(connection.files.caPath); pass the CA that signed it with --ca", code: rpc.code)
      } else if lower.contains("hostname") || lower.contains("host name") {
        self.init(
          "TLS handshake failed: the server's certificate does not name \(server.host); reissue "
            + "it with `jobctl certs init --hosts \(server.host)` or connect by a listed name",
          code: rpc.code)
      } else if lower.contains("certificate_expired") || lower.contains("certificate expired") {
        self.init(
          "TLS handshake failed: the server rejected client certificate "
            + "\(connection.files.certificatePath) as expired; issue a new one with "
            + "`jobctl certs issue`", code: rpc.code)
      } else if lower.contains("unknown_ca") || lower.contains("bad_certificate")
        || lower.contains("certificate_required") || lower.contains("decrypt_error")
      {
        self.init(
          "TLS handshake failed: the server does not accept client certificate "
            + "\(connection.files.certificatePath); it must be signed by the server's CA "
            + "(`jobctl certs issue` with that CA)", code: rpc.code)
      } else if lower.contains("protocol_version") || lower.contains("wrong_version") {
        self.init(
          "TLS handshake failed: no common TLS version (the server requires TLS 1.3)",
          code: rpc.code)
      } else if lower.contains("refused") || lower.contains("connect") || lower.contains("resolve")
      {
        self.init(
          "cannot reach the job worker at \(server) (\(Self.shortReason(detail))); is `jobworker` "
            + "running there? set --server or JOBCTL_SERVER", code: rpc.code)
      } else {
        self.init("job worker at \(server) unavailable: \(detail)", code: rpc.code)
      }
    case .deadlineExceeded:
      self.init(
        "no answer from the job worker at \(server) within \(connection.timeout); is it "
          + "overloaded or is --server wrong? (--timeout raises the limit)", code: rpc.code)
    case .unauthenticated:
      self.init("not authenticated: \(rpc.message)", code: rpc.code)
    case .permissionDenied:
      self.init("permission denied: \(rpc.message)", code: rpc.code)
    default:
      self.init(rpc.message, code: rpc.code)
    }
  }

  /// The error and its causes on one line.
  static func flatten(_ error: any Error) -> String {
    var parts: [String] = []
    var current: (any Error)? = error
    var depth = 0
    while let error = current, depth < 8 {
      depth += 1
      switch error {
      case let rpc as RPCError:
        parts.append(rpc.message)
        current = rpc.cause
      case let runtime as RuntimeError:
        parts.append(runtime.message)
        current = runtime.cause
      default:
        parts.append(String(describing: error))
        current = nil
      }
    }
    return parts.filter { !$0.isEmpty }.joined(separator: ": ")
      .replacingOccurrences(of: "\n", with: " ")
  }

  private static func shortReason(_ detail: String) -> String {
    if detail.lowercased().contains("refused") { return "connection refused" }
    return detail.count > 120 ? String(detail.prefix(120)) + "…" : detail
  }
}
