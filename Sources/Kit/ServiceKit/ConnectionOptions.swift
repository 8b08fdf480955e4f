public import ArgumentParser
public import ConnectionKit
public import Logging

/// The connection limits every server binary has: how long a new connection may take to
/// complete its handshake, and how many connections it may hold in all and per address.
public struct ConnectionOptions: ParsableArguments, Sendable {
  @Option(
    help:
      "Seconds a new connection has for its TLS handshake and HTTP/2 preface (env: HANDSHAKE_TIMEOUT_SECONDS)."
  )
  public var handshakeTimeout: Double = Environment.value("HANDSHAKE_TIMEOUT_SECONDS", default: 10)

  @Option(help: "Most connections open at once; more are closed at once (env: MAX_CONNECTIONS).")
  public var maxConnections: Int = Environment.value("MAX_CONNECTIONS", default: 10_000)

  @Option(
    help: "Most connections open at once from one IP address (env: MAX_CONNECTIONS_PER_ADDRESS).")
  public var maxConnectionsPerAddress: Int = Environment.value(
    "MAX_CONNECTIONS_PER_ADDRESS", default: 1_000)

  public init() {}

  public func validate() throws {
    guard (0.1...600).contains(handshakeTimeout) else {
      throw ValidationError("--handshake-timeout must be between 0.1 and 600 seconds")
    }
    guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
    guard maxConnectionsPerAddress >= 1 else {
      throw ValidationError("--max-connections-per-address must be at least 1")
    }
  }

  /// The limits the flags describe.
  public var limits: ConnectionLimits {
    ConnectionLimits(
      handshakeTimeout: .milliseconds(Int((handshakeTimeout * 1000).rounded())),
      maxConnections: maxConnections, maxConnectionsPerAddress: maxConnectionsPerAddress)
  }

  /// Start-up: raises the open-file limit as far as allowed (and logs it, warning when
  /// `--max-connections` does not fit), then returns ``limits``.
  public func prepare(logger: Logger) -> ConnectionLimits {
    FileDescriptorLimit.raise(forConnections: maxConnections, logger: logger)
    return limits
  }
}
