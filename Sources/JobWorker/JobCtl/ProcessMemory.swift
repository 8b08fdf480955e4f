#if canImport(Glibc)
  import Glibc
#endif

/// How `jobctl` keeps the memory it frees, for the commands that stream a job's output.
///
/// **Why.** Each socket read of a job's output ends up in fresh heap memory: swift-nio-http2's
/// frame decoder appends the read to a buffer whose storage is still shared with the DATA
/// frame it handed on, so the append copies into a new allocation (a buffer of the read's
/// size and more, 16 KiB to hundreds of KiB). With glibc's defaults those buffers are given
/// back to the kernel as soon as they are freed (an `munmap` above the dynamic mmap threshold,
/// an `madvise(MADV_DONTNEED)` when a thread's arena trims its top), so the next one is
/// faulted in again page by page: 17,000 minor faults and 0.06 s of system time for a 64 MiB
/// log (`Benchmarks/job-output.sh`, `docs/benchmarks.md`), more than the decryption.
///
/// **What.** Allocations below ``mmapThreshold`` come from the heap, and the heap is trimmed
/// only when more than ``trimThreshold`` is free at its top, so freed buffers are reused
/// rather than returned and faulted in again: 3,100 faults for the same log. The cost is that
/// a streaming `jobctl` keeps its peak heap until it exits; that peak is bounded by what it
/// may hold (the standard output queue, 1 MiB, and the HTTP/2 and TLS buffers of one
/// connection: tens of MiB at most, `CLIHostileTests`), and the process is short-lived. The
/// server keeps glibc's defaults: it returns memory as connections end.
enum ProcessMemory {
  static let mmapThreshold: Int32 = 32 << 20
  static let trimThreshold: Int32 = 256 << 20

  /// Applies the thresholds; once, before the first connection. Returns whether they were
  /// applied: `false` where the C library has no `mallopt` (not glibc), which changes nothing
  /// but the page faults.
  @discardableResult
  static func keepFreedMemory() -> Bool {
    #if canImport(Glibc)
      // `mallopt` is declared in <malloc.h>, which Swift's Glibc module does not import: it is
      // looked up by name. Its parameters' numbers are glibc's ABI (<malloc.h>).
      let trimThresholdParameter: Int32 = -1  // M_TRIM_THRESHOLD
      let mmapThresholdParameter: Int32 = -3  // M_MMAP_THRESHOLD
      guard let symbol = dlsym(nil, "mallopt") else { return false }
      let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
      return mallopt(mmapThresholdParameter, mmapThreshold) == 1
        && mallopt(trimThresholdParameter, trimThreshold) == 1
    #else
      return false
    #endif
  }
}
