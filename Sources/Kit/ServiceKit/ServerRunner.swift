public import ArgumentParser
public import Logging
public import ServiceLifecycle

/// Flags that control how a server stops.
public struct ShutdownOptions: ParsableArguments, Sendable {
  @Option(
    name: .customLong("shutdown-grace"),
    parsing: .unconditional,
    help:
      "Seconds a graceful shutdown (SIGTERM/SIGINT) may take before remaining work is cancelled (env: SHUTDOWN_GRACE_SECONDS)."
  )
  public var graceSeconds: Int = Environment.value("SHUTDOWN_GRACE_SECONDS", default: 10)

  public init() {}

  public func validate() throws {
    guard (1...3600).contains(graceSeconds) else {
      throw ValidationError("--shutdown-grace must be between 1 and 3600 seconds")
    }
  }
}

/// Runs a process's services until SIGTERM or SIGINT, then shuts them down gracefully in
/// reverse order (so list servers last: they stop accepting first), cancelling whatever is
/// still running after the grace period.
public enum ServerRunner {
  public static func run(
    services: [any Service],
    shutdown: ShutdownOptions,
    logger: Logger
  ) async throws {
    var configuration = ServiceGroupConfiguration(
      services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
      gracefulShutdownSignals: [.sigterm, .sigint],
      logger: logger)
    configuration.maximumGracefulShutdownDuration = .seconds(shutdown.graceSeconds)
    configuration.maximumCancellationDuration = .seconds(5)
    try await ServiceGroup(configuration: configuration).run()
  }
}
