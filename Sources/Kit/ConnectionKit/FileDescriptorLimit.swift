public import Logging

#if canImport(Glibc)
  import Glibc
#endif

/// The process's limit on open file descriptors, which bounds how many connections a server
/// can hold whatever ``ConnectionLimits`` say.
public enum FileDescriptorLimit {
  /// Raises the soft `RLIMIT_NOFILE` to the hard limit (many systems start processes at a
  /// soft 1,024 with a much higher hard limit), logs the result, and warns when
  /// `maxConnections` plus a reserve for everything else (files, clients, the database) does
  /// not fit. Returns the soft limit now in force, or nil where it cannot be read.
  @discardableResult
  public static func raise(forConnections maxConnections: Int, logger: Logger) -> Int? {
    #if canImport(Glibc)
      let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
      var limit = rlimit()
      guard getrlimit(resource, &limit) == 0 else { return nil }
      let before = limit.rlim_cur
      if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(resource, &raised) == 0 { limit = raised }
      }
      let soft = Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is UInt.max: no limit
      let metadata: Logger.Metadata = [
        "fd.soft_limit_before": "\(before)", "fd.soft_limit": "\(limit.rlim_cur)",
        "fd.hard_limit": "\(limit.rlim_max)", "connection.max": "\(maxConnections)",
      ]
      if maxConnections > soft - reserve {
        logger.warning(
          "the open-file limit is below --max-connections plus a reserve: connections beyond it fail at accept",
          metadata: metadata.merging(["fd.reserve": "\(reserve)"]) { $1 })
      } else {
        logger.info("open-file limit", metadata: metadata)
      }
      return soft
    #else
      return nil
    #endif
  }

  /// Descriptors kept for everything but client connections.
  static let reserve = 256
}
