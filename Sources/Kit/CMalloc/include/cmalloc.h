#ifndef CMALLOC_H
#define CMALLOC_H

/// Fixes glibc's mmap threshold and trim threshold (mallopt(3): M_MMAP_THRESHOLD,
/// M_TRIM_THRESHOLD), which also ends glibc's dynamic adjustment of both. Swift's Glibc module
/// does not import <malloc.h>, hence this shim. Returns 1 if both were set, 0 otherwise (and
/// always 0 where the C library is not glibc).
int cmalloc_set_thresholds(int mmap_threshold_bytes, int trim_threshold_bytes);

/// 1 if this shim was compiled against glibc's mallopt(3), 0 if it is the fallback that sets
/// nothing: what a test checks, since the fallback would otherwise fail silently.
int cmalloc_has_mallopt(void);

#endif
