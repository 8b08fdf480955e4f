import ArgumentParser
import CounterClient
import Foundation
import Logging
import ServiceKit
import TLSKit
import UnixSignals

/// A presence client, or with `--count N` a load generator of N simulated clients.
@main
struct ClientCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "client",
    abstract: "Connects to a gateway and answers its pings; --count N simulates N clients.")

  @Option(help: "Client id (default: a fresh UUID). With --count, the prefix of the ids.")
  var id: String?

  @Option(help: "Gateway addresses, HOST:PORT[,HOST:PORT…] (env: CLIENT_GATEWAY).")
  var gateway: HostPortList = Environment.value(
    "CLIENT_GATEWAY", default: HostPortList([HostPort(host: "127.0.0.1", port: 50051)]))

  @Option(
    parsing: .unconditional, help: "Simulated clients, with ids <id>-0 … <id>-(N-1).")
  var count: Int?

  @Option(
    parsing: .unconditional, help: "HTTP/2 connections the simulated clients share.")
  var connections = 1

  @Option(
    parsing: .unconditional, help: "Seconds between summary lines in load mode.")
  var summaryInterval = 5

  @Option(help: "Connect over TLS, verifying gateways with this CA (env: CLIENT_TLS_CA).")
  var tlsCA = Environment.string("CLIENT_TLS_CA", default: "")

  @Option(help: "Client certificate, if gateways require one (env: CLIENT_TLS_CERT).")
  var tlsCert = Environment.string("CLIENT_TLS_CERT", default: "")

  @Option(help: "Key of --tls-cert (env: CLIENT_TLS_KEY).")
  var tlsKey = Environment.string("CLIENT_TLS_KEY", default: "")

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
    guard summaryInterval >= 1 else { throw ValidationError("--summary-interval must be ≥ 1") }
    _ = try security()
  }

  func security() throws -> ClientSecurity {
    do {
      return try ClientSecurity.from(
        caPath: tlsCA.nilIfEmpty, certificatePath: tlsCert.nilIfEmpty,
        keyPath: tlsKey.nilIfEmpty, prefix: "tls")
    } catch { throw ValidationError(error.message) }
  }

  func run() async throws {
    logging.bootstrap()
    let logger = Logger(label: "client")
    // Chosen here, not as the flag's default, which `--help` would print as if it were fixed.
    let id = self.id ?? UUID().uuidString.lowercased()
    let ids = count.map { n in (0..<n).map { "\(id)-\($0)" } } ?? [id]
    var configuration = CounterClient.Configuration(
      ids: ids, gateways: gateway.endpoints, connections: connections)
    configuration.security = try security()
    let client = CounterClient(configuration: configuration, logger: logger)
    if count == nil { logger.info("starting", metadata: ["client.id": "\(id)"]) }
    let interrupted = try await withThrowingTaskGroup(of: Bool.self) { group in
      group.addTask {
        try await client.run()
        return false
      }
      if count != nil {
        group.addTask {
          while !Task.isCancelled {
            try await Task.sleep(for: .seconds(summaryInterval))
            // Unbuffered, so that lines show up promptly in a file or a pipe.
            FileHandle.standardOutput.write(Data("\(client.stats.summary())\n".utf8))
          }
          return false
        }
      }
      group.addTask {
        await Self.waitForInterrupt()
        return true
      }
      defer { group.cancelAll() }
      return try await group.next() ?? true
    }
    // The clients ended by themselves only if the gateway refused their ids.
    if !interrupted { throw ExitCode.failure }
  }

  /// Returns on SIGINT or SIGTERM, so that Ctrl-C ends the streams cleanly.
  static func waitForInterrupt() async {
    for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) { return }
  }
}
