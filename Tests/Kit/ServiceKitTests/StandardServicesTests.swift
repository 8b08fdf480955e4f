import CounterProtos
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Prometheus
import ServiceKit
import ServiceKitProtos
import SwiftProtobuf
import TestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Health, reflection and /metrics on real loopback sockets.
@Suite struct StandardServicesTests {
  static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

  /// Runs a plaintext server with the standard services (advertising the counter's protos)
  /// on 127.0.0.1:0 for the duration of `body`, then shuts it down (also when `body` throws,
  /// which would otherwise leave the group waiting for a server that never stops).
  static func withServer(
    _ body: @Sendable (HostPort, StandardServices, GRPCServerService) async throws -> Void
  ) async throws {
    let standard = try StandardServices(
      serving: ["tenten.interview.StatusReader"],
      descriptorSets: [CounterDescriptors.fileDescriptorSetBase64])
    let service = GRPCServerService(
      name: "test", address: HostPort(host: "127.0.0.1", port: 0), services: standard.all,
      logger: Self.logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await service.serveUntilStopped() }
      do {
        let address = try #require(await service.listeningAddress)
        try await body(address, standard, service)
      } catch {
        service.beginGracefulShutdown()
        throw error
      }
      service.beginGracefulShutdown()
      try await group.waitForAll()
    }
  }

  func withServer(
    _ body: @Sendable (HostPort, StandardServices) async throws -> Void
  ) async throws {
    try await Self.withServer { address, standard, _ in try await body(address, standard) }
  }

  @Test("health Check answers SERVING, NOT_FOUND for unknown services, and Watch sees changes")
  func health() async throws {
    try await withServer { address, standard in
      // The probe's 3 s default suits a container health check; here the machine may be
      // loaded with parallel tests, and the answer, not its latency, is under test.
      let timeout = Duration.seconds(20)
      #expect(try await HealthProbe.check(address, timeout: timeout).get() == .serving)
      #expect(
        try await HealthProbe.check(
          address, service: "tenten.interview.StatusReader", timeout: timeout
        ).get() == .serving)
      let unknown = await HealthProbe.check(address, service: "nope", timeout: timeout)
      #expect(throws: RPCError.self) { try unknown.get() }

      let transport = try HTTP2ClientTransport.Posix(
        target: address.resolvableTarget, transportSecurity: .plaintext)
      try await withGRPCClient(transport: transport) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        try await health.watch(.with { $0.service = "" }) { response in
          var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
          for try await message in response.messages {
            seen.append(message.status)
            if seen.count == 1 { standard.health.markAllNotServing() }
            if seen.count == 2 { break }
          }
          #expect(seen == [.serving, .notServing])
        }
      }
    }
  }

  /// Regression: a health Watch never ends by itself, and gRPC's graceful shutdown waits for
  /// every open RPC, so a load balancer's watch held a draining server until the shutdown
  /// grace ran out.
  @Test("a draining server ends health watches with NOT_SERVING instead of waiting for them")
  func drainEndsHealthWatches() async throws {
    try await Self.withServer { address, _, service in
      let transport = try HTTP2ClientTransport.Posix(
        target: address.resolvableTarget, transportSecurity: .plaintext)
      try await withGRPCClient(transport: transport) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        // Without the fix the watch is only ended by this deadline (and fails with it); 20 s
        // bounds how long the failing test waits on a loaded machine.
        var options = CallOptions.defaults
        options.timeout = .seconds(20)
        try await health.watch(.with { $0.service = "" }, options: options) { response in
          var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
          for try await message in response.messages {
            seen.append(message.status)
            if seen.count == 1 { service.beginGracefulShutdown() }
          }
          #expect(seen == [.serving, .notServing])
        }
      }
    }
  }

  @Test("run() fails with the address and the reason when the port is taken")
  func runFailsWhenThePortIsTaken() async throws {
    try await Self.withServer { taken, _, _ in
      let second = GRPCServerService(
        name: "second", address: taken, services: [], logger: Self.logger)
      let outcome = try await withThrowingTaskGroup(of: (any Error)?.self) { race in
        race.addTask {
          do {
            try await second.run()
            return nil
          } catch { return error }
        }
        // Bounds how long the failing (hanging) version keeps the test waiting.
        race.addTask {
          try await Task.sleep(for: .seconds(20))
          return CancellationError()
        }
        defer { race.cancelAll() }
        return try await race.next()!
      }
      let failure = try #require(outcome as? ServerError, "\(String(describing: outcome))")
      #expect(failure.address == taken)
      #expect(failure.reason.contains("Address already in use"), "\(failure.reason)")
    }
  }

  @Test("reflection lists services and serves descriptors by symbol and by file")
  func reflection() async throws {
    try await withServer { address, _ in
      let transport = try HTTP2ClientTransport.Posix(
        target: address.resolvableTarget, transportSecurity: .plaintext)
      try await withGRPCClient(transport: transport) { client in
        let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
        try await reflection.serverReflectionInfo { writer in
          try await writer.write(.with { $0.listServices = "" })
          try await writer.write(
            .with { $0.fileContainingSymbol = "tenten.interview.StatusReader" })
          try await writer.write(.with { $0.fileByFilename = "grpc/health/v1/health.proto" })
          try await writer.write(.with { $0.fileContainingSymbol = "no.such.Symbol" })
        } onResponse: { response in
          var answers: [Grpc_Reflection_V1_ServerReflectionResponse] = []
          for try await message in response.messages { answers.append(message) }
          try #require(answers.count == 4)
          let names = answers[0].listServicesResponse.service.map(\.name)
          #expect(names.contains("tenten.interview.StatusReader"))
          #expect(names.contains("grpc.health.v1.Health"))
          #expect(names.contains("grpc.reflection.v1alpha.ServerReflection"))
          #expect(!names.contains("tenten.interview.Gateway"))

          let file = try Google_Protobuf_FileDescriptorProto(
            serializedBytes: try #require(
              answers[1].fileDescriptorResponse.fileDescriptorProto.first))
          #expect(file.name == "tenten/interview/service.proto")
          #expect(file.service.contains { $0.name == "StatusReader" })
          #expect(answers[2].fileDescriptorResponse.fileDescriptorProto.count == 1)
          #expect(answers[3].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
        }
      }
    }
  }

  @Test(
    "grpcurl lists and describes services through reflection (independent client)",
    .requiresGRPCurl)
  func grpcurl() async throws {
    let grpcurl = try #require(TestEnvironment.which("grpcurl"))
    try await withServer { address, _ in
      let list = try await Self.run(grpcurl, ["-plaintext", "\(address)", "list"])
      #expect(list.contains("tenten.interview.StatusReader"))
      #expect(list.contains("grpc.health.v1.Health"))
      let describe = try await Self.run(
        grpcurl, ["-plaintext", "\(address)", "describe", "tenten.interview.StatusReader"])
      #expect(describe.contains("FetchOnlineUsersInLast3Mins"))
      let check = try await Self.run(
        grpcurl, ["-plaintext", "\(address)", "grpc.health.v1.Health/Check"])
      #expect(check.contains("SERVING"))
    }
  }

  @Test("/metrics serves Prometheus text; other paths are 404")
  func metrics() async throws {
    let registry = PrometheusCollectorRegistry()
    registry.makeCounter(
      descriptor: .init(metricName: "test_requests", unitName: "total", helpText: "requests seen")
    ).increment(by: Int64(3))
    let server = try await MetricsServer.bind(
      to: HostPort(host: "127.0.0.1", port: 0), registry: registry, logger: Self.logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.run() }
      let base = "http://127.0.0.1:\(server.address.port)"
      let (body, response) = try await URLSession.shared.data(from: URL(string: base + "/metrics")!)
      #expect((response as? HTTPURLResponse)?.statusCode == 200)
      #expect(String(decoding: body, as: UTF8.self).contains("test_requests_total 3"))
      let (_, missing) = try await URLSession.shared.data(from: URL(string: base + "/other")!)
      #expect((missing as? HTTPURLResponse)?.statusCode == 404)
      group.cancelAll()
    }
  }

  /// Runs grpcurl with a bound on its run time; what it printed.
  /// grpcurl with a deadline for the whole call (its own start, the connection, reflection):
  /// 30 s, a bound on a hung call rather than a latency claim. 10 s failed once in a CI run
  /// that shared its 2 cores with a release build (`describe` hit the deadline).
  static func run(_ grpcurl: String, _ arguments: [String]) async throws -> String {
    try await runProcess(grpcurl, ["-max-time", "30"] + arguments, timeout: .seconds(60)).output
  }
}
