public import Foundation
public import GRPCCore
public import ServiceKitProtos
import SwiftProtobuf

/// An index of protobuf file descriptors, answering the questions of gRPC server reflection:
/// which file defines a symbol, and what a file (with its imports) looks like serialized.
public struct DescriptorIndex: Sendable {
  private var serialized: [String: Data] = [:]
  private var dependencies: [String: [String]] = [:]
  private var fileBySymbol: [String: String] = [:]

  /// Thrown when embedded descriptors cannot be decoded (a build problem, not a user one).
  public struct InvalidDescriptorSet: Error, CustomStringConvertible {
    public var description: String
  }

  /// Builds the index from base64-encoded `FileDescriptorSet`s, as generated next to each
  /// proto module (`CounterDescriptors.fileDescriptorSetBase64`, …). Files that appear in
  /// several sets (e.g. `google/protobuf/timestamp.proto`) are kept once.
  public init(fileDescriptorSetsBase64: [String]) throws {
    for encoded in fileDescriptorSetsBase64 {
      guard let bytes = Data(base64Encoded: encoded) else {
        throw InvalidDescriptorSet(description: "descriptor set is not valid base64")
      }
      let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: bytes)
      for file in set.file where serialized[file.name] == nil {
        serialized[file.name] = try file.serializedBytes()
        dependencies[file.name] = file.dependency
        let prefix = file.package.isEmpty ? "" : file.package + "."
        for service in file.service {
          fileBySymbol[prefix + service.name] = file.name
          for method in service.method {
            fileBySymbol[prefix + service.name + "." + method.name] = file.name
          }
        }
        for message in file.messageType { index(message, prefix: prefix, file: file.name) }
        for enumType in file.enumType { fileBySymbol[prefix + enumType.name] = file.name }
        for ext in file.extension { fileBySymbol[prefix + ext.name] = file.name }
      }
    }
  }

  private mutating func index(
    _ message: Google_Protobuf_DescriptorProto, prefix: String, file: String
  ) {
    let name = prefix + message.name
    fileBySymbol[name] = file
    for nested in message.nestedType { index(nested, prefix: name + ".", file: file) }
    for enumType in message.enumType { fileBySymbol[name + "." + enumType.name] = file }
  }

  /// Whether `symbol` (fully qualified, no leading dot) is defined by an indexed file.
  public func contains(symbol: String) -> Bool { fileBySymbol[symbol] != nil }

  /// The serialized file named `name` followed by everything it imports, transitively.
  public func fileWithDependencies(named name: String) -> [Data]? {
    guard serialized[name] != nil else { return nil }
    var files: [Data] = []
    var seen: Set<String> = []
    var pending = [name]
    while let next = pending.popLast() {
      guard seen.insert(next).inserted, let file = serialized[next] else { continue }
      files.append(file)
      pending.append(contentsOf: dependencies[next] ?? [])
    }
    return files
  }

  /// The file defining `symbol` (fully qualified), with its imports.
  public func fileContaining(symbol: String) -> [Data]? {
    let trimmed = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
    return fileBySymbol[trimmed].flatMap { fileWithDependencies(named: $0) }
  }
}

/// `grpc.reflection.v1.ServerReflection`: lets `grpcurl list`/`describe` work without proto
/// files. Lists exactly the services this server registered.
public final class ReflectionService: Grpc_Reflection_V1_ServerReflection.SimpleServiceProtocol,
  Sendable
{
  private let index: DescriptorIndex
  private let services: [String]

  /// - Parameters:
  ///   - index: Descriptors of every proto the server's services use.
  ///   - services: Fully qualified names of the services to list, e.g.
  ///     `tenten.interview.StatusReader`. The reflection services list themselves.
  public init(index: DescriptorIndex, services: [String]) {
    self.index = index
    self.services = (services + [
      "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    ]).sorted()
  }

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      try await response.write(answer(message))
    }
  }

  /// Answers one reflection request. Errors travel in-band (`error_response`) as the
  /// reflection protocol requires; the stream stays open.
  func answer(
    _ request: Grpc_Reflection_V1_ServerReflectionRequest
  ) -> Grpc_Reflection_V1_ServerReflectionResponse {
    var response = Grpc_Reflection_V1_ServerReflectionResponse()
    response.validHost = request.host
    response.originalRequest = request
    func fail(_ code: RPCError.Code, _ message: String) {
      response.errorResponse = .with {
        $0.errorCode = Int32(code.rawValue)
        $0.errorMessage = message
      }
    }
    func files(_ found: [Data]?, notFound: String) {
      guard let found else { return fail(.notFound, notFound) }
      response.fileDescriptorResponse = .with { $0.fileDescriptorProto = found }
    }
    switch request.messageRequest {
    case .fileByFilename(let name):
      files(index.fileWithDependencies(named: name), notFound: "no file named '\(name)'")
    case .fileContainingSymbol(let symbol):
      files(index.fileContaining(symbol: symbol), notFound: "no symbol named '\(symbol)'")
    case .fileContainingExtension(let ext):
      // Extensions are not indexed by field number: none is ever found.
      fail(.notFound, "no extension \(ext.extensionNumber) of '\(ext.containingType)'")
    case .allExtensionNumbersOfType(let type):
      if index.contains(symbol: type) {
        response.allExtensionNumbersResponse = .with { $0.baseTypeName = type }
      } else {
        fail(.notFound, "no type named '\(type)'")
      }
    case .listServices:
      response.listServicesResponse = .with {
        $0.service = services.map { name in .with { $0.name = name } }
      }
    case nil:
      fail(.invalidArgument, "the request names no reflection query")
    }
    return response
  }
}

/// `grpc.reflection.v1alpha.ServerReflection`, for grpcurl releases before 1.9.
///
/// The v1alpha messages are wire-identical to v1, so each message is transcoded through its
/// bytes and answered by the one ``ReflectionService`` implementation.
public final class ReflectionServiceV1Alpha:
  Grpc_Reflection_V1alpha_ServerReflection.SimpleServiceProtocol, Sendable
{
  private let v1: ReflectionService

  public init(_ v1: ReflectionService) { self.v1 = v1 }

  public func serverReflectionInfo(
    request: RPCAsyncSequence<Grpc_Reflection_V1alpha_ServerReflectionRequest, any Error>,
    response: RPCWriter<Grpc_Reflection_V1alpha_ServerReflectionResponse>,
    context: ServerContext
  ) async throws {
    for try await message in request {
      let asV1 = try Grpc_Reflection_V1_ServerReflectionRequest(
        serializedBytes: message.serializedBytes() as [UInt8])
      let answer: [UInt8] = try v1.answer(asV1).serializedBytes()
      try await response.write(
        Grpc_Reflection_V1alpha_ServerReflectionResponse(serializedBytes: answer))
    }
  }
}
