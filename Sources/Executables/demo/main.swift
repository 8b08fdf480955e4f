import ArgumentParser
import Logging
import ServiceKit
import ServiceLifecycle

/// `swift run demo`: the systems of this repository, on loopback, with no set-up.
struct DemoCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo", abstract: "Runs the online counter on loopback and narrates it.")

  @Option(
    parsing: .unconditional, help: "Seconds the online counter part runs.")
  var duration = 30

  @Flag(help: "Show the components' own logs (otherwise warnings and errors only).")
  var verbose = false

  @OptionGroup var logging: LoggingOptions

  func validate() throws {
    guard duration >= 2 else { throw ValidationError("--duration must be at least 2 seconds") }
  }

  func run() async throws {
    logging.bootstrap()
    var logger = Logger(label: "demo")
    if !verbose { logger.logLevel = .warning }
    // Parts run one after the other; after Ctrl-C (graceful shutdown) each remaining part
    // sees the shutdown at once and returns.
    let parts: [any Service] = [
      CounterDemo(duration: .seconds(duration), logger: logger),
      JobWorkerDemo(logger: logger),
    ]
    let sequence = Sequence(parts: parts)
    let group = ServiceGroup(
      configuration: .init(
        services: [.init(service: sequence, successTerminationBehavior: .gracefullyShutdownGroup)],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
  }
}

// Top-level code (the module has several files), where `main()` resolves to the synchronous
// overload; parse and run explicitly instead.
let command = DemoCommand.parseOrExit()
do {
  try await command.run()
} catch {
  DemoCommand.exit(withError: error)
}

/// Runs services one after another, in the caller's graceful-shutdown context.
private struct Sequence: Service {
  let parts: [any Service]

  func run() async throws {
    for part in parts { try await part.run() }
  }
}
