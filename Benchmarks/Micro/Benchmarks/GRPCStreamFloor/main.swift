// The floor of the job worker's output path (issue 13): what grpc-swift 2 and its NIO
// transport deliver to one client over mutual TLS on loopback when the server does nothing
// but write ready-made messages, and the client nothing but count them.
//
// No protobuf, no file, no job, no copy into `Data` on either side: the server's serializer
// makes the transport's bytes from a preallocated buffer (one copy, the least the public
// `MessageSerializer` API allows), and the client's deserializer only reads the message's
// length (no copy). The HTTP/2 settings are `jobctl`'s (1 MiB stream window and frames) and
// the messages the job worker's (255 KiB).
//
//   GRPCStreamFloor serve PORT CERT_DIR
//   GRPCStreamFloor fetch PORT CERT_DIR MIB RUNS [MESSAGE_KIB] [--aligned]
//
// `--aligned` puts jobctl's `HTTP2FrameAligner` (16 KiB steps) in front of the client's HTTP/2
// decoder, as `jobctl` does; without it the client is grpc-swift's stock one.
//
// CERT_DIR is what `jobctl certs init --dir CERT_DIR` writes (ca.pem, server.pem,
// server-key.pem, admin.pem, admin-key.pem). `fetch` prints one line per run: seconds from
// the call's start to its end (connection set up beforehand, by a first small call), MB/s,
// and the process's user and system CPU over the run. Benchmarks/job-output.sh (with FLOOR
// set) runs both, interleaved with `jobctl` against the job worker.
import ConnectionKit
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore

let method = MethodDescriptor(fullyQualifiedService: "floor.Output", method: "Stream")

/// What the client asks for: `count` messages of `size` bytes.
struct Ask: Sendable {
  var count: UInt32
  var size: UInt32
}

struct AskCoder: MessageSerializer, MessageDeserializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ ask: Ask) throws -> Bytes {
    var buffer = ByteBuffer()
    buffer.writeMultipleIntegers(ask.count, ask.size)
    return Bytes(buffer.readableBytesView)
  }

  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> Ask {
    let pair = bytes.withUnsafeBytes { raw -> (UInt32, UInt32)? in
      var buffer = ByteBuffer(bytes: raw)
      return buffer.readMultipleIntegers(as: (UInt32, UInt32).self)
    }
    guard let (count, size) = pair, size > 0, size <= 4 << 20 else {
      throw RPCError(code: .invalidArgument, message: "ask for 1 B to 4 MiB messages")
    }
    return Ask(count: count, size: size)
  }
}

/// The server's messages: ready-made bytes, copied once into the transport's.
struct BufferSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: ByteBuffer) throws -> Bytes {
    Bytes(message.readableBytesView)
  }
}

/// The client's view of a message: its length. Nothing is copied.
struct LengthDeserializer: MessageDeserializer {
  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> Int { bytes.count }
}

struct FloorService: RegistrableRPCService {
  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    router.registerHandler(
      forMethod: method, deserializer: AskCoder(), serializer: BufferSerializer()
    ) { request, _ in
      var asks = request.messages.makeAsyncIterator()
      guard let ask = try await asks.next() else {
        throw RPCError(code: .invalidArgument, message: "no request message")
      }
      return StreamingServerResponse { writer in
        let payload = ByteBuffer(repeating: UInt8(ascii: "x"), count: Int(ask.size))
        for _ in 0..<ask.count { try await writer.write(payload) }
        return [:]
      }
    }
  }
}

func cpuSeconds() -> (user: Double, system: Double) {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
  return (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

func usage() -> Never {
  FileHandle.standardError.write(
    Data(
      ("usage: GRPCStreamFloor serve PORT CERT_DIR\n"
        + "       GRPCStreamFloor fetch PORT CERT_DIR MIB RUNS [MESSAGE_KIB]\n").utf8))
  exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 4, let port = Int(arguments[2]) else { usage() }
let certificates = arguments[3]
func pem(_ name: String) -> TLSConfig.CertificateSource {
  .file(path: "\(certificates)/\(name).pem", format: .pem)
}
func key(_ name: String) -> TLSConfig.PrivateKeySource {
  .file(path: "\(certificates)/\(name)-key.pem", format: .pem)
}

switch arguments[1] {
case "serve":
  let transport = HTTP2ServerTransport.Posix(
    address: .ipv4(host: "127.0.0.1", port: port),
    transportSecurity: .mTLS(certificateChain: [pem("server")], privateKey: key("server")) {
      $0.trustRoots = .certificates([pem("ca")])
    },
    config: .defaults { $0.rpc.maxRequestPayloadSize = 1024 })
  try await GRPCServer(transport: transport, services: [FloorService()]).serve()

case "fetch":
  guard arguments.count >= 6, let mib = Int(arguments[4]), let runs = Int(arguments[5]),
    mib > 0, runs > 0
  else { usage() }
  let aligned = arguments.contains("--aligned")
  let numbers = arguments.dropFirst(6).filter { $0 != "--aligned" }
  let messageBytes = numbers.first.flatMap { Int($0) }.map { $0 * 1024 } ?? 255 * 1024
  let total = mib << 20
  let ask = Ask(
    count: UInt32((total + messageBytes - 1) / messageBytes), size: UInt32(messageBytes))
  let transport = try HTTP2ClientTransport.Posix(
    target: .ipv4(address: "127.0.0.1", port: port),
    transportSecurity: .mTLS(certificateChain: [pem("admin")], privateKey: key("admin")) {
      $0.trustRoots = .certificates([pem("ca")])
      $0.serverCertificateVerification = .fullVerification
    },
    config: .defaults {
      $0.http2.targetWindowSize = 1 << 20
      $0.http2.maxFrameSize = 1 << 20
      if aligned {
        $0.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHTTP2FrameAligner(
              maximumFrameLength: 1 << 20, maximumReadLength: 16 * 1024)
          }
        }
      }
    })
  let options = {
    var options = CallOptions.defaults
    options.maxRequestMessageBytes = 4 << 20
    options.maxResponseMessageBytes = 4 << 20
    return options
  }()
  try await withGRPCClient(transport: transport) { client in
    @Sendable func fetch(_ ask: Ask) async throws -> Int {
      try await client.serverStreaming(
        request: ClientRequest(message: ask), descriptor: method, serializer: AskCoder(),
        deserializer: LengthDeserializer(), options: options
      ) { response in
        var received = 0
        for try await length in response.messages { received += length }
        return received
      }
    }
    _ = try await fetch(Ask(count: 1, size: 1))  // connects and handshakes
    for _ in 0..<runs {
      let cpu = cpuSeconds()
      let start = ContinuousClock.now
      let received = try await fetch(ask)
      let elapsed = ContinuousClock.now - start
      let after = cpuSeconds()
      let seconds =
        Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
      print(
        String(
          format:
            "floor\(aligned ? "-aligned" : "") %d bytes %.4f s %.0f MB/s user %.3f s sys %.3f s",
          received, seconds,
          Double(received) / seconds / 1e6, after.user - cpu.user, after.system - cpu.system))
    }
  }

default:
  usage()
}
