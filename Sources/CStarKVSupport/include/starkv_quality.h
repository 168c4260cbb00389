#ifndef STARKV_QUALITY_H
#define STARKV_QUALITY_H
#include <stddef.h>
#include <stdint.h>

/// Kept-mass sums of four rows of a little-endian [H, L] float tensor (the decode quality proxy,
/// docs/algorithms.md §10.1; quality_sums.c). Row r starts at element base[r]; its sum is the fp64
/// sum of the values at idx[r][0], idx[r][1], … in that order with one accumulator (the same bits
/// as a plain loop), skipping positions outside [0, length). kind: 2 = binary16 (read through
/// `half_table`, 65,536 floats), 3 = bfloat16, 4 = binary32. The four rows' additions are
/// interleaved so that four independent chains are in flight.
void starkv_kept_sums4(const uint8_t *data, int kind, const float *half_table, int64_t length,
                       const int64_t base[4], const int32_t *const idx[4], const int64_t count[4],
                       double out[4]);

/// Sets words[0 ..< ceil(length/64)] to the bitmap of the positions idx[0 ..< n] (bit j % 64 of
/// word j / 64) and returns 1, or returns 0 when the positions are not strictly ascending inside
/// [0, length) (the words are then unspecified). The kept-set digest v2 (docs/replay.md "Digest").
int starkv_bitmap_from_sorted(const int32_t *idx, int64_t n, int64_t length, uint64_t *words);
#endif
