#ifndef STARKV_KEPTROWS_H
#define STARKV_KEPTROWS_H
#include <stdint.h>

// Kept rows as bitmaps over the prompt (docs/replay.md "Digest", docs/policies.md "Sweeps";
// kept_rows.c). A bitmap over [0, length) is ceil(length/64) little-endian-ordered words: bit
// j % 64 of word j / 64 is set when position j is kept; bits at and past `length` are zero.

/// Sets words[0 ..< ceil(length/64)] to the kept row of a top-k over order keys: position
/// j < n is kept when keys[j] > cut, or keys[j] == cut and j is among the first `ties` positions
/// holding that key; positions [tail_lo, tail_hi) are kept too (the always-kept window). Returns
/// the number of kept positions, or -1 when not 0 <= n <= tail_lo <= tail_hi <= length (the words
/// are then all zero). `ties` >= n keeps every key equal to the cut.
int64_t starkv_ranked_bitmap_u32(const uint32_t *keys, int64_t n, uint32_t cut, int64_t ties, int64_t tail_lo,
                                 int64_t tail_hi, int64_t length, uint64_t *words);
/// The same over 64-bit order keys.
int64_t starkv_ranked_bitmap_u64(const uint64_t *keys, int64_t n, uint64_t cut, int64_t ties, int64_t tail_lo,
                                 int64_t tail_hi, int64_t length, uint64_t *words);

/// Writes the set positions of a bitmap over [0, length), ascending, to out and returns how many.
/// `out` must have room for that count plus 16 (vector stores run past the last position).
int64_t starkv_bitmap_positions(const uint64_t *words, int64_t length, int32_t *out);

/// Set bits of a bitmap in [lo, hi) (0 <= lo <= hi; hi within the bitmap).
int64_t starkv_bitmap_count(const uint64_t *words, int64_t lo, int64_t hi);

/// Widens n little-endian stored floats to fp32: kind 2 = binary16 (through F16C where the CPU
/// has it, else `half_table`, 65,536 floats), 3 = bfloat16, 4 = binary32 (copied). `src` must be
/// aligned for its element type. Little-endian hosts only.
void starkv_widen_to_float(const uint8_t *src, int kind, const float *half_table, int64_t n, float *out);

/// 0: let the kernels pick AVX-512 where the CPU has it; 1: force the portable code (tests).
void starkv_keptrows_force_portable(int on);
#endif
