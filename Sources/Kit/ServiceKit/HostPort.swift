import ArgumentParser

/// A `HOST:PORT` pair as given on the command line: `0.0.0.0:50051`, `localhost:9101`,
/// `[::1]:50052`. Port 0 asks the kernel for a free port.
public struct HostPort: Hashable, Sendable, CustomStringConvertible, ExpressibleByArgument {
  public var host: String
  public var port: Int

  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  /// Parses `HOST:PORT` or `[IPV6]:PORT`; `nil` when malformed or the port is out of range.
  public init?(_ text: String) {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
      guard let close = text.firstIndex(of: "]"),
        text[text.index(after: close)...].hasPrefix(":")
      else { return nil }
      host = text[text.index(after: text.startIndex)..<close]
      portText = text[text.index(close, offsetBy: 2)...]
    } else {
      guard let colon = text.lastIndex(of: ":") else { return nil }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
      if host.contains(":") { return nil }  // a bare IPv6 address needs brackets
    }
    guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
    self.init(host: String(host), port: port)
  }

  public init?(argument: String) { self.init(argument) }

  /// Parses a comma-separated list, `HOST:PORT[,HOST:PORT…]`; `nil` if any entry is malformed
  /// or the list is empty.
  public static func list(_ text: String) -> [HostPort]? {
    let entries = text.split(separator: ",", omittingEmptySubsequences: true)
      .map { $0.trimmingCharacters(in: .whitespaces) }
    let parsed = entries.compactMap { HostPort($0) }
    return parsed.isEmpty || parsed.count != entries.count ? nil : parsed
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  public static var defaultValueDescription: String { "HOST:PORT" }
}

/// A non-empty, comma-separated list of endpoints, as a flag value (`--status a:1,b:2`).
public struct HostPortList: Hashable, Sendable, CustomStringConvertible, ExpressibleByArgument {
  public var endpoints: [HostPort]

  public init(_ endpoints: [HostPort]) { self.endpoints = endpoints }

  public init?(argument: String) {
    guard let endpoints = HostPort.list(argument) else { return nil }
    self.endpoints = endpoints
  }

  public var description: String { endpoints.map(\.description).joined(separator: ",") }
}

extension String {
  fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
    String(drop(while: { set.contains($0) }).reversed().drop(while: { set.contains($0) }).reversed())
  }
}

extension Set<Character> {
  fileprivate static let whitespaces: Set<Character> = [" ", "\t"]
}
