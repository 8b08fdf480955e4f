public import ArgumentParser
import TLSKit

/// The `--health-check` mode every server binary has (a container's `HEALTHCHECK` runs it):
/// probe the server's own `--listen` address with `grpc.health.v1` and exit 0 when serving.
///
/// A TLS server is probed over TLS: `--health-check-ca` verifies the server (its certificate
/// must name 127.0.0.1, which `jobctl certs init` does by default), and a server that requires
/// client certificates also needs `--health-check-cert` and `--health-check-key`.
public struct HealthCheckOptions: ParsableArguments, Sendable {
  @Flag(help: "Probe the gRPC health of the server at --listen, exit 0 if serving, else 1.")
  public var healthCheck = false

  @Option(help: "CA that signed the server's certificate, for a TLS probe (env: HEALTH_CHECK_CA).")
  public var healthCheckCA = Environment.string("HEALTH_CHECK_CA", default: "")

  @Option(help: "Client certificate for a mutual TLS probe (env: HEALTH_CHECK_CERT).")
  public var healthCheckCert = Environment.string("HEALTH_CHECK_CERT", default: "")

  @Option(help: "Key of --health-check-cert (env: HEALTH_CHECK_KEY).")
  public var healthCheckKey = Environment.string("HEALTH_CHECK_KEY", default: "")

  public init() {}

  public func validate() throws {
    _ = try security()
  }

  func security() throws -> ClientSecurity {
    do {
      return try ClientSecurity.from(
        caPath: healthCheckCA.nilIfEmpty, certificatePath: healthCheckCert.nilIfEmpty,
        keyPath: healthCheckKey.nilIfEmpty,
        prefix: "health-check")
    } catch { throw ValidationError(error.message) }
  }

  /// With `--health-check`, probes `listen` and ends the process; otherwise returns at once.
  public func runIfRequested(listen: HostPort) async throws {
    guard healthCheck else { return }
    await HealthProbe.exitWithHealthOf(listen: listen, security: try security())
  }
}
