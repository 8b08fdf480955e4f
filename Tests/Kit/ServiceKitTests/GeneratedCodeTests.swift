import Crypto
import Foundation
import TestSupport
import Testing

/// Generated code must match the protos it came from: `scripts/generate-protos` records the
/// SHA-256 of every `.proto` and every generated file in `Protos/checksums.sha256`.
@Suite struct GeneratedCodeTests {
  static let root = packageRoot

  static func recorded() throws -> [String: String] {
    let text = try String(
      contentsOf: root.appending(path: "Protos/checksums.sha256"), encoding: .utf8)
    var sums: [String: String] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
      let parts = line.split(separator: " ", maxSplits: 1)
      guard parts.count == 2 else { continue }
      sums[parts[1].trimmingCharacters(in: .whitespaces)] = String(parts[0])
    }
    return sums
  }

  static func files(under directory: String, suffix: String) -> [String] {
    let base = root.appending(path: directory)
    guard let walker = FileManager.default.enumerator(atPath: base.path) else { return [] }
    return walker.compactMap { $0 as? String }.filter { $0.hasSuffix(suffix) }
      .map { directory + "/" + $0 }
  }

  static func sha256(_ path: String) throws -> String {
    let data = try Data(contentsOf: root.appending(path: path))
    return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
  }

  @Test("every .proto and generated file matches the recorded checksums")
  func generatedCodeIsFresh() throws {
    let recorded = try Self.recorded()
    let current =
      Self.files(under: "Protos", suffix: ".proto")
      + ["Sources/Kit/ServiceKitProtos", "Sources/OnlineCounter/CounterProtos",
        "Sources/JobWorker/JobWorkerProtos"].flatMap { Self.files(under: $0, suffix: ".swift") }
    #expect(Set(current) == Set(recorded.keys), "files were added or removed: run scripts/generate-protos")
    for path in current {
      let actual = try Self.sha256(path)
      #expect(
        recorded[path] == actual,
        "\(path) changed since generation: run scripts/generate-protos and commit the output")
    }
  }

  @Test("the contract parts of the seed proto are kept verbatim")
  func contractKept() throws {
    let proto = try String(
      contentsOf: Self.root.appending(path: "Protos/tenten/interview/service.proto"),
      encoding: .utf8)
    #expect(proto.contains("package tenten.interview;"))
    for fragment in [
      "rpc FetchOnlineUsersInLast3Mins(FetchOnlineUsersInLast3MinsRequest)\n        returns (FetchOnlineUsersInLast3MinsResponse);",
      "message Pong {\n    // Must no change this message\n    Status  status = 1;\n}",
      "message FetchOnlineUsersInLast3MinsResponse {\n    // Must not change this message\n    uint64  online_users = 1;\n}",
      "STATUS_UNKNOWN  = 0;", "STATUS_EVEN     = 1;", "STATUS_ODD      = 2;",
    ] {
      #expect(proto.contains(fragment), "contract fragment missing: \(fragment)")
    }
  }
}
