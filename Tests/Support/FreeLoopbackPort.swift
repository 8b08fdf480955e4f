internal import Foundation

#if canImport(Glibc)
  internal import Glibc
#endif

/// A port nothing listens on right now (bound to 0, read back, released).
public func freeLoopbackPort() throws -> Int {
  let reserved = try ReservedPort()
  reserved.release()
  return reserved.port
}

/// A loopback port held by this test: bound but not listening, so connections to it are
/// refused at once (a server that is down), and no other test can bind it meanwhile, which a
/// port that was merely free a moment ago does not ensure (tests run in parallel, and their
/// clients' source ports come from the same range). ``release()`` it right before starting
/// the server that should answer there.
public final class ReservedPort: Sendable {
  public let port: Int
  private let descriptor: Int32

  public init() throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    // Outside the kernel's ephemeral range: a client's source port always comes from that
    // range, so a port from below it cannot be taken by some test's outgoing connection while
    // its server is down (a restart on the same port: seen once, PostgreSQL's restart in
    // ScaleOutTests failed to bind). Random, so parallel tests rarely try the same one, and a
    // taken one is skipped; bind(0) only if every try fails.
    let range = Self.portsBelowEphemeralRange()
    var candidates = (0..<200).map { _ in Int.random(in: range) }
    candidates.append(0)
    for candidate in candidates {
      if let port = Self.bind(fd, port: candidate) {
        descriptor = fd
        self.port = port
        return
      }
    }
    close(fd)
    throw POSIXError(.EADDRINUSE)
  }

  /// Binds `fd` to 127.0.0.1:`port` (0: any); the port bound, or nil.
  private static func bind(_ fd: Int32, port: Int) -> Int? {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        Glibc.bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
      }
    }
    return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
  }

  /// From 10000 up to the first ephemeral port (`net.ipv4.ip_local_port_range`, 32768 by
  /// default); the default range if that cannot be read or leaves too little room.
  static func portsBelowEphemeralRange() -> ClosedRange<Int> {
    let fallback = 10_000...32_767
    guard
      let text = try? String(
        contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
      let low = text.split(whereSeparator: \.isWhitespace).first.flatMap({ Int($0) }),
      low > 11_000
    else { return fallback }
    return 10_000...(low - 1)
  }

  /// Lets a server bind the port.
  public func release() { close(descriptor) }
}
