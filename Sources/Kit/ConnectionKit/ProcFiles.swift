#if canImport(Glibc)
  import Glibc
#endif

/// Reads the small text files of `/proc`, whose size reads as 0: until the end, at most 1 MiB.
enum ProcFiles {
  static func read(_ path: String) -> String? {
    #if canImport(Glibc)
      let fd = open(path, O_RDONLY | O_CLOEXEC)
      guard fd >= 0 else { return nil }
      defer { close(fd) }
      var bytes: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 4096)
      while bytes.count < 1 << 20 {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        bytes += chunk.prefix(n)
      }
      return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    #else
      return nil
    #endif
  }
}
