#ifndef STARKV_SUPPORT_H
#define STARKV_SUPPORT_H
#include <stddef.h>
#include <stdint.h>
#include "starkv_sha256.h"
#include "starkv_quality.h"
#include "starkv_keptrows.h"
#include "starkv_topk.h"

/// CRC32C (Castagnoli, reflected 0x82F63B78). `crc` is the running value: pass 0 for a new
/// checksum and the previous result to continue. Uses SSE4.2 where the CPU has it.
uint32_t starkv_crc32c(uint32_t crc, const void *data, size_t length);

/// Byte-plane shuffle of `count` elements of `width` bytes: out[p*count + i] = in[i*width + p].
void starkv_shuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width);
/// Inverse of starkv_shuffle.
void starkv_unshuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width);

/// The same CRC32C as starkv_crc32c, from three interleaved hardware streams combined with
/// starkv_crc32c_combine (faster on long buffers; reading_simd.c).
uint32_t starkv_crc32c_3way(uint32_t crc, const void *data, size_t length);
/// CRC32C of A || B from crc(A), crc(B) and |B| in bytes.
uint32_t starkv_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2);
/// The same bytes as starkv_unshuffle; SSE2 for element widths 2 and 4 (reading_simd.c).
void starkv_unshuffle_fast(const uint8_t *in, uint8_t *out, size_t count, size_t width);
/// Places `n` bytes of a byte-shuffled stream, starting at stream byte `start`, into their
/// un-shuffled positions of `out` (`count` elements of `width` bytes); start + n <= count*width.
void starkv_unshuffle_range(const uint8_t *in, size_t n, size_t start, uint8_t *out, size_t count, size_t width);
/// starkv_unshuffle_range with SSE2 for element widths 2 and 4 (the same bytes; reading_simd.c).
void starkv_unshuffle_range_fast(const uint8_t *in, size_t n, size_t start, uint8_t *out, size_t count, size_t width);
/// starkv_unshuffle_fast that also reports whether any element is NaN or infinite (`kind` as for
/// starkv_first_nonfinite; 0 = no check): returns 1 when some element is, else 0. The check reads
/// the exponent's byte planes while they are in registers (reading_simd.c).
int starkv_unshuffle_check(const uint8_t *in, uint8_t *out, size_t count, size_t width, int kind);
/// The same index as starkv_first_nonfinite, scanning 16 bytes at a time (reading_simd.c).
long starkv_first_nonfinite_fast(const uint8_t *data, size_t count, int kind);
/// Index of the first NaN or infinite element of little-endian floats (kind 2 = binary16,
/// 3 = bfloat16, 4 = binary32, 8 = binary64), or -1 when all are finite.
long starkv_first_nonfinite(const uint8_t *data, size_t count, int kind);
/// glibc: serve blocks up to `mmap_threshold_bytes` from the heap, keep up to
/// `trim_threshold_bytes` of freed heap mapped and, when `arenas` > 0, use at most that many
/// arenas (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD / M_ARENA_MAX). Returns 1 when all were
/// set; 0 elsewhere (other C libraries) or when glibc refused a value.
int starkv_malloc_keep_freed(int mmap_threshold_bytes, int trim_threshold_bytes, int arenas);
#endif
