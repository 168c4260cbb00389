// Allocator settings for the command-line tool (Sources/starkv/Allocator.swift says why).
#include "starkv_support.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int starkv_malloc_keep_freed(int mmap_threshold_bytes, int trim_threshold_bytes, int arenas) {
#if defined(__GLIBC__)
    int ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1;
    ok &= mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes) == 1;
    if (arenas > 0) ok &= mallopt(M_ARENA_MAX, arenas) == 1;
    return ok;
#else
    (void)mmap_threshold_bytes;
    (void)trim_threshold_bytes;
    (void)arenas;
    return 0;
#endif
}
