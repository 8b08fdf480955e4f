#include "cmalloc.h"

#include <stdlib.h>  // defines __GLIBC__ under glibc

#if defined(__GLIBC__)
#include <malloc.h>

int cmalloc_set_thresholds(int mmap_threshold_bytes, int trim_threshold_bytes) {
  return mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1 &&
         mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes) == 1;
}

int cmalloc_has_mallopt(void) { return 1; }
#else
int cmalloc_set_thresholds(int mmap_threshold_bytes, int trim_threshold_bytes) {
  (void)mmap_threshold_bytes;
  (void)trim_threshold_bytes;
  return 0;
}

int cmalloc_has_mallopt(void) { return 0; }
#endif
