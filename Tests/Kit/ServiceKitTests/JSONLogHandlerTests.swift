import Foundation
import Logging
import Testing
import Synchronization

@testable import ServiceKit

@Suite struct JSONLogHandlerTests {
  @Test("each event is one valid JSON object with metadata as fields")
  func writesJSONLines() throws {
    let lines = Mutex<[String]>([])
    var handler = JSONLogHandler(label: "gateway", sink: .init { line in lines.withLock { $0.append(line) } })
    handler.logLevel = .debug
    let logger = Logger(label: "gateway") { _ in handler }
    logger.info(
      "client \"connected\"\n", metadata: ["gateway.client_id": "c-1", "msg": "collides"])
    logger.trace("below the level")

    let captured = lines.withLock { $0 }
    #expect(captured.count == 1)
    let line = try #require(captured.first)
    #expect(line.hasSuffix("\n") && line.dropLast().contains("\n") == false)
    let object = try #require(
      JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
    #expect(object["level"] == "info")
    #expect(object["logger"] == "gateway")
    #expect(object["msg"] == "client \"connected\"\n")
    #expect(object["gateway.client_id"] == "c-1")
    #expect(object["meta.msg"] == "collides")
  }

  @Test func escapesControlCharacters() {
    #expect(JSONEscaping.escape("a\u{01}b") == "a\\u0001b")
  }
}
