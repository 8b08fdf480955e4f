import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
public import ServiceKitProtos
public import TLSKit

/// A `grpc.health.v1.Health/Check` client, for container health checks (`--health-check`)
/// and tests.
public enum HealthProbe {
  /// Asks the server at `address` whether `service` is serving. Any failure, including no
  /// answer within `timeout`, is reported as not serving with a reason.
  public static func check(
    _ address: HostPort, service: String = "", security: ClientSecurity = .plaintext,
    timeout: Duration = .seconds(3)
  ) async -> Result<Grpc_Health_V1_HealthCheckResponse.ServingStatus, any Error> {
    do {
      let transport = try HTTP2ClientTransport.Posix(
        target: address.resolvableTarget, transportSecurity: security.transportSecurity)
      return try await withGRPCClient(transport: transport) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        var options = CallOptions.defaults
        options.timeout = timeout
        let response = try await health.check(.with { $0.service = service }, options: options)
        return .success(response.status)
      }
    } catch {
      return .failure(error)
    }
  }

  /// The `--health-check` mode of a server binary (e.g. a container's `HEALTHCHECK`): probes
  /// the server's own `--listen` address (a wildcard host is probed on loopback) and ends the
  /// process, 0 when serving and 1 otherwise, with the reason on standard output.
  public static func exitWithHealthOf(
    listen: HostPort, security: ClientSecurity = .plaintext
  ) async -> Never {
    let host = ["0.0.0.0", "::"].contains(listen.host) ? "127.0.0.1" : listen.host
    switch await check(HostPort(host: host, port: listen.port), security: security) {
    case .success(.serving):
      exit(0)
    case .success(let status):
      print("not serving: \(status)")
    case .failure(let error):
      print("health check failed: \(error)")
    }
    exit(1)
  }
}
