#ifndef STARKV_TOPK_H
#define STARKV_TOPK_H
#include <stdint.h>

/// Where the k best of a row of 32-bit order keys end (the C form of `TopKCut<UInt32>`,
/// Sources/StarKVPolicies/Scoring.swift): the k-th largest key, how many positions hold exactly
/// that key (`equal`) and how many of those belong to the k best (`ties`).
typedef struct {
    uint32_t key;
    int64_t ties;
    int64_t equal;
} starkv_topk_cut32;

/// Which passes `starkv_topk_cuts_u32_using` runs: the best the CPU has (AUTO), or one named
/// kind (for tests: every kind gives the same cuts); NO_SAMPLE (or-ed in) skips the sampled
/// brackets and runs the bucketed radix select on the whole row.
enum {
    STARKV_TOPK_AUTO = 0,
    STARKV_TOPK_SCALAR = 1,
    STARKV_TOPK_AVX2 = 2,
    STARKV_TOPK_AVX512 = 3,
    STARKV_TOPK_NO_SAMPLE = 16,
};

/// The cut of every rank in ranks[0 ..< count] (each in 1 ... n, any order, repeats allowed) over
/// keys[0 ..< n], written to out[i] for ranks[i] (topk_select.c says how). Returns 0 when the
/// sampled brackets held every rank, 1 when some ranks needed the exact select of the whole row
/// (the cuts are exact either way), -1 for a rank outside 1 ... n or a negative count, -2 when
/// scratch memory could not be allocated, -3 when `path` names a pass this CPU lacks.
int starkv_topk_cuts_u32_using(const uint32_t *keys, int64_t n, const int64_t *ranks, int64_t count,
                               starkv_topk_cut32 *out, int path);

/// `starkv_topk_cuts_u32_using` with STARKV_TOPK_AUTO.
int starkv_topk_cuts_u32(const uint32_t *keys, int64_t n, const int64_t *ranks, int64_t count, starkv_topk_cut32 *out);

/// Bit p set when pass kind p (STARKV_TOPK_SCALAR ... STARKV_TOPK_AVX512) runs on this CPU.
int starkv_topk_paths(void);
#endif
