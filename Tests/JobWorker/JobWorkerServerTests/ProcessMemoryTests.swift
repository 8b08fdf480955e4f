import Testing

@testable import JobCtl

/// `jobctl`'s allocator settings for streaming output (`ProcessMemory`): found and applied
/// through glibc's `mallopt`, whose declaration Swift's Glibc module does not import.
@Suite struct ProcessMemoryTests {
  #if canImport(Glibc)
    @Test func theThresholdsAreAppliedOnGlibc() {
      #expect(ProcessMemory.keepFreedMemory())
    }
  #endif

  @Test func theThresholdsAreAboveWhatOneReadAllocates() {
    // A read's buffer is 16 KiB to a few hundred KiB: all of them must come from the heap
    // (below the mmap threshold), and a freed one must not be trimmed away at once.
    #expect(ProcessMemory.mmapThreshold >= 4 << 20)
    #expect(ProcessMemory.trimThreshold > ProcessMemory.mmapThreshold)
  }
}
