import Logging
import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// Gives freed heap memory back to the operating system after a burst of connections.
///
/// glibc keeps memory freed by many threads in per-thread arenas and returns little of it on
/// its own: after 20,000 idle connections closed, the gateway's RSS stayed near its 1.5 GB
/// peak. `malloc_trim(0)` releases the free pages of every arena. It is looked up at run time
/// because only glibc has it (musl and Darwin do not; there this does nothing).
public enum MemoryTrim {
  /// Calls `malloc_trim(0)` on NIO's blocking thread pool (it walks the heap and can take
  /// tens of milliseconds, too long for an event loop) and logs the resident set size before
  /// and after.
  static func trimInBackground(openConnections: Int, server: String, logger: Logger) {
    NIOThreadPool.singleton.submit { state in
      guard case .active = state else { return }
      let before = residentBytes()
      guard trim() else { return }
      let after = residentBytes()
      logger.info(
        "returned freed memory to the OS after a burst of connections",
        metadata: [
          "server.name": "\(server)", "connection.open": "\(openConnections)",
          "memory.rss_before_bytes": "\(before ?? -1)", "memory.rss_after_bytes": "\(after ?? -1)",
        ])
    }
  }

  /// `malloc_trim(0)`; false where the C library has none.
  @discardableResult
  public static func trim() -> Bool {
    #if canImport(Glibc)
      typealias MallocTrim = @convention(c) (Int) -> Int32
      guard let symbol = dlsym(nil, "malloc_trim") else { return false }
      _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
      return true
    #else
      return false
    #endif
  }

  /// This process's resident set size in bytes (Linux: `/proc/self/statm`), or nil.
  public static func residentBytes() -> Int? {
    #if canImport(Glibc)
      // "size resident shared …" in pages.
      guard let fields = ProcFiles.read("/proc/self/statm")?.split(separator: " "),
        fields.count > 1, let pages = Int(fields[1])
      else { return nil }
      return pages * sysconf(Int32(_SC_PAGESIZE))
    #else
      return nil
    #endif
  }
}
