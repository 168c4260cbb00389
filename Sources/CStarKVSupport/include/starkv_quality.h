#ifndef STARKV_QUALITY_H
#define STARKV_QUALITY_H
#include <stddef.h>
#include <stdint.h>

/// Kept-mass sums of the decode quality proxy (docs/algorithms.md §10.1; quality_sums.c) over a
/// little-endian [H, L] float tensor `data` (kind: 2 = binary16 read through `half_table`, 65,536
/// floats; 3 = bfloat16; 4 = binary32). Head h reads row `head_row[h]` of the kept rows (row r:
/// `row_count[r]` positions from `row_ptr[r]`). out[h]
/// is the fp64 sum of data[h, j] over the row's positions j in their listed order with one
/// accumulator — the bits of a plain loop — skipping positions outside [0, length). Rows that are
/// strictly ascending inside [0, length) (as every policy returns them) run without per-position
/// checks, eight heads interleaved; a row equal to 0, 1, …, length−1 takes `full_total[h]` (the
/// same ascending sum of the whole row, computed by the caller).
void starkv_kept_sums(const uint8_t *data, int kind, const float *half_table, int64_t length, int64_t heads,
                      const int64_t *head_row, const int32_t *const *row_ptr, const int64_t *row_count, int64_t rows,
                      const double *full_total, double *out);

/// Sets words[0 ..< ceil(length/64)] to the bitmap of the positions idx[0 ..< n] (bit j % 64 of
/// word j / 64) and returns 1, or returns 0 when the positions are not strictly ascending inside
/// [0, length) (the words are then unspecified). The kept-set digest v2 (docs/replay.md "Digest").
int starkv_bitmap_from_sorted(const int32_t *idx, int64_t n, int64_t length, uint64_t *words);

/// Writes out[j * stride + h] = the value of head h at position j (read as starkv_kept_sums reads
/// `data`) for h < heads, and 0 for heads <= h < stride: the [position][head] copy that
/// starkv_kept_sums_bitmaps reads.
void starkv_transpose_heads(const uint8_t *data, int kind, const float *half_table, int64_t heads, int64_t length,
                            int64_t stride, float *out);

/// 1 when starkv_kept_sums_bitmaps runs on this CPU (AVX-512F/BW/DQ), 0 otherwise or when forced off.
int starkv_kept_sums_bitmaps_available(void);
/// 1: make starkv_kept_sums_bitmaps unavailable (tests of the fallback); 0: undo.
void starkv_kept_sums_force_portable(int on);

/// The sums of starkv_kept_sums for `sets` selections whose rows are bitmaps over [0, length)
/// (selection s: `words[s]`, `words_per_row` words per row; bit j % 64 of word j / 64 = position j
/// kept): out[s * heads + h] is the fp64 sum of transposed[j * stride + h] over the set positions
/// j of row head_row[s * heads + h] of selection s, ascending, with one accumulator. `stride` is a
/// multiple of 32, at least `heads`. Returns 0 (nothing written) when not available here or the
/// sizes do not fit.
int starkv_kept_sums_bitmaps(const float *transposed, int64_t stride, int64_t length, int64_t heads, int64_t sets,
                             const int64_t *head_row, const uint64_t *const *words, int64_t words_per_row, double *out);
#endif
