import CMalloc
import Testing

@Suite("jobctl's allocator shim")
struct AllocatorShimTests {
  /// `jobctl` fixes glibc's allocator thresholds through this shim (`JobCtlMain`). Its first
  /// version tested `__GLIBC__` before any glibc header had defined it, so it compiled to the
  /// fallback that sets nothing, and only a benchmark's fault count showed it. Checked without
  /// calling mallopt(3), which would change this test process's allocator.
  #if os(Linux)
    @Test func compiledAgainstGlibcMallopt() {
      #expect(cmalloc_has_mallopt() == 1)
    }
  #endif
}
