public import ArgumentParser
import GRPCCore
public import GRPCNIOTransportHTTP2

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
    let parsed = entries.compactMap { HostPort(String(trimmingBlanks($0))) }
    return parsed.isEmpty || parsed.count != entries.count ? nil : parsed
  }

  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  public static var defaultValueDescription: String { "HOST:PORT" }
}

// Conversions to and from gRPC's addresses, so that no server or client repeats them.
extension HostPort {
  /// The host and port of a bound IP address (a transport's `listeningAddress`); `nil` for
  /// other kinds of address (Unix domain, vsock).
  public init?(_ address: SocketAddress) {
    if let ipv4 = address.ipv4 {
      self.init(host: ipv4.host, port: ipv4.port)
    } else if let ipv6 = address.ipv6 {
      self.init(host: ipv6.host, port: ipv6.port)
    } else {
      return nil
    }
  }

  /// The address as a server's listening address (`ipv6` for an IPv6 literal, else `ipv4`).
  var listenAddress: SocketAddress {
    host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
  }

  /// The address as a gRPC client target (`ipv4:`/`ipv6:`/`dns:` by the host's form).
  public var resolvableTarget: any ResolvableTarget {
    if host.contains(":") { return .ipv6(address: host, port: port) }
    if host.split(separator: ".").count == 4, host.allSatisfy({ $0.isNumber || $0 == "." }) {
      return .ipv4(address: host, port: port)
    }
    return .dns(host: host, port: port)
  }
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

/// `text` without leading and trailing spaces and tabs.
private func trimmingBlanks(_ text: Substring) -> Substring {
  let isBlank = { (character: Character) in character == " " || character == "\t" }
  guard let first = text.firstIndex(where: { !isBlank($0) }),
    let last = text.lastIndex(where: { !isBlank($0) })
  else { return "" }
  return text[first...last]
}
