public import GRPCCore
import ServiceKitProtos

/// The services every one of our gRPC servers exposes next to its own: health and reflection.
public struct StandardServices: Sendable {
  /// Health, shared with the component so it can flip statuses (e.g. on drain).
  public let health: HealthService
  /// Reflection v1 and v1alpha.
  public let reflection: [any RegistrableRPCService]

  /// - Parameters:
  ///   - serving: Fully qualified names of the component's own services; they are reported
  ///     `SERVING` by health and listed by reflection.
  ///   - descriptorSets: Base64 descriptor sets of the component's protos (generated as
  ///     `…Descriptors.fileDescriptorSetBase64`).
  public init(serving: [String], descriptorSets: [String]) throws {
    self.health = HealthService(serving: serving)
    let index = try DescriptorIndex(
      fileDescriptorSetsBase64: descriptorSets + [ServiceKitDescriptors.fileDescriptorSetBase64])
    let v1 = ReflectionService(
      index: index, services: serving + ["grpc.health.v1.Health"])
    self.reflection = [v1, ReflectionServiceV1Alpha(v1)]
  }

  /// Health and reflection, ready to append to a server's service list.
  public var all: [any RegistrableRPCService] { [health] + reflection }
}
