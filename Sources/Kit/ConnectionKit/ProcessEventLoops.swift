import NIOCore
public import NIOPosix

#if canImport(Glibc)
  import Glibc
#endif

/// The process's event loops, one per CPU the process may actually run on.
///
/// NIO's singleton group has `System.coreCount` loops: the host's CPUs, less a cgroup quota or
/// cpuset, but not the scheduler's affinity mask. A server pinned with `taskset` or `numactl`
/// (or started by something that sets the mask) to 2 of 16 CPUs got 16 loops on 2 CPUs: on a
/// 16-core host with the gateway on 2 cores and 50,000 clients, its loops ran so late that
/// pings queued up and left in bursts, 22,464 streams were reset and the ping interval's p99
/// was 8.6 s; with 2 loops, under the same load, p99 1012 ms and none ended
/// (docs/benchmarks.md, "On a 16-core host").
///
/// Like NIO's singleton, the group lives as long as the process and is never shut down.
/// `NIO_SINGLETON_GROUP_LOOP_COUNT`, when set, still decides the count.
public enum ProcessEventLoops {
  /// Shared by every listener (the gateway's, `TLSServerTransport`, `PlaintextListenerFactory`,
  /// the metrics server).
  public static let group = MultiThreadedEventLoopGroup(numberOfThreads: loopCount)

  static var loopCount: Int {
    if let raw = getenv("NIO_SINGLETON_GROUP_LOOP_COUNT"), let value = Int(String(cString: raw)),
      value > 0
    {
      return value
    }
    return usableCoreCount()
  }

  /// The CPUs the calling thread may run on (its affinity mask, `Cpus_allowed` in
  /// `/proc/thread-self/status`), within `System.coreCount` (cgroup quota and cpuset);
  /// `System.coreCount` when the mask cannot be read.
  public static func usableCoreCount() -> Int {
    guard let status = ProcFiles.read("/proc/thread-self/status"),
      let allowed = cpusAllowed(status: status)
    else { return System.coreCount }
    return max(1, min(allowed, System.coreCount))
  }

  /// The number of CPUs in a `Cpus_allowed:` line (a hexadecimal mask in comma-separated
  /// 32-bit groups, e.g. `ffff` or `00000000,00000003`).
  static func cpusAllowed(status: String) -> Int? {
    guard
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
    else { return nil }
    var count = 0
    for character in line.dropFirst("Cpus_allowed:".count) where character != "," {
      if character == " " || character == "\t" { continue }
      guard let digit = character.hexDigitValue else { return nil }
      count += digit.nonzeroBitCount
    }
    return count
  }
}
