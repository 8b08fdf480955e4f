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
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
        bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
      }
    }
    guard bound else {
      close(fd)
      throw POSIXError(.EADDRINUSE)
    }
    descriptor = fd
    port = Int(UInt16(bigEndian: address.sin_port))
  }

  /// Lets a server bind the port.
  public func release() { close(descriptor) }
}
