// Allocator settings for the command-line tool (Sources/starkv/Allocator.swift says why).
#include "starkv_support.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int starkv_malloc_keep_freed(int mmap_threshold_bytes, int trim_threshold_bytes) {
#if defined(__GLIBC__)
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes) == 1;
#else
    (void)mmap_threshold_bytes;
    (void)trim_threshold_bytes;
    return 0;
#endif
}
