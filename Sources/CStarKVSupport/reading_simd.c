// Faster building blocks of chunk reading (issue 15): a vectorised byte un-shuffle and a CRC32C
// that runs three interleaved hardware streams and combines them. Both give exactly the bytes /
// value of the portable versions in support.c (tested in Tests/StarKVTraceTests).
//
// CRC combination: CRC is linear over GF(2), so crc(A || B) = crc(A) · x^(8·|B|) mod P  ⊕ crc(B)
// (for the pre/post-inverted CRC as well; Mark Adler's crc32_combine in zlib works the same way).
// The multiplication by x^(8n) mod P uses the square-and-multiply table of x^(2^k) mod P.
#include "starkv_support.h"
#include <string.h>

#define CRC32C_POLY 0x82F63B78u  // reflected Castagnoli polynomial

// a·b mod P, both reflected (bit 31 = x^0).
static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return p;
}

// x^(n·2^k) mod P.
static uint32_t x2nmodp(uint64_t n, unsigned k) {
    uint32_t p = 1u << 31;  // x^0
    uint32_t sq = 1u << 30;  // x^1
    for (unsigned i = 0; i < k; i++) sq = multmodp(sq, sq);
    while (n) {
        if (n & 1) p = multmodp(sq, p);
        n >>= 1;
        sq = multmodp(sq, sq);
    }
    return p;
}

uint32_t starkv_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2) {
    return multmodp(x2nmodp(length2, 3), crc1) ^ crc2;
}

#if defined(__x86_64__)
#include <emmintrin.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc3_hw(uint32_t crc, const uint8_t *p, size_t n) {
    // Three equal blocks of a multiple of 8 bytes; the third also takes the tail.
    size_t block = (n / 3) & ~(size_t)7;
    const uint8_t *a = p, *b = p + block, *c = p + 2 * block;
    uint64_t c0 = ~crc, c1 = 0xFFFFFFFFu, c2 = 0xFFFFFFFFu;
    for (size_t i = 0; i < block; i += 8) {
        uint64_t va, vb, vc;
        memcpy(&va, a + i, 8);
        memcpy(&vb, b + i, 8);
        memcpy(&vc, c + i, 8);
        c0 = _mm_crc32_u64(c0, va);
        c1 = _mm_crc32_u64(c1, vb);
        c2 = _mm_crc32_u64(c2, vc);
    }
    // The third stream's tail is the one-stream CRC's job (support.c), continued from its state.
    uint32_t third = starkv_crc32c(~(uint32_t)c2, c + block, n - 3 * block);
    uint32_t ab = starkv_crc32c_combine(~(uint32_t)c0, ~(uint32_t)c1, block);
    return starkv_crc32c_combine(ab, third, n - 2 * block);
}
#endif

uint32_t starkv_crc32c_3way(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    // Below a few KB the combination (two table walks) costs more than it saves.
    if (length >= 8192 && __builtin_cpu_supports("sse4.2")) return crc3_hw(crc, (const uint8_t *)data, length);
#endif
    return starkv_crc32c(crc, data, length);
}

void starkv_unshuffle_fast(const uint8_t *in, uint8_t *out, size_t count, size_t width) {
    size_t i = 0;
#if defined(__x86_64__)
    // SSE2 (baseline on x86-64): interleave the byte planes 16 elements at a time.
    if (width == 2) {
        const uint8_t *p0 = in, *p1 = in + count;
        for (; i + 16 <= count; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(p1 + i));
            _mm_storeu_si128((__m128i *)(out + 2 * i), _mm_unpacklo_epi8(a, b));
            _mm_storeu_si128((__m128i *)(out + 2 * i + 16), _mm_unpackhi_epi8(a, b));
        }
    } else if (width == 4) {
        const uint8_t *p0 = in, *p1 = in + count, *p2 = in + 2 * count, *p3 = in + 3 * count;
        for (; i + 16 <= count; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(p1 + i));
            __m128i c = _mm_loadu_si128((const __m128i *)(p2 + i));
            __m128i d = _mm_loadu_si128((const __m128i *)(p3 + i));
            __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
            __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
            _mm_storeu_si128((__m128i *)(out + 4 * i), _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128((__m128i *)(out + 4 * i + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128((__m128i *)(out + 4 * i + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128((__m128i *)(out + 4 * i + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
        }
    }
#endif
    // Remaining elements (and other widths): the portable loop.
    for (size_t p = 0; p < width; p++) {
        const uint8_t *src = in + p * count;
        for (size_t j = i; j < count; j++) out[j * width + p] = src[j];
    }
}

// Streaming un-shuffle: `n` bytes of the shuffled stream from byte `start` (plane p = start /
// count, element i = start % count) go to out[i * width + p], ... Each plane is a strided write,
// so SSE2 widens 16 plane bytes to 16 elements' slots and blends them into what the output
// already holds (other planes' bytes, or not yet written bytes that a later plane overwrites).
void starkv_unshuffle_range_fast(const uint8_t *in, size_t n, size_t start, uint8_t *out, size_t count, size_t width) {
#if defined(__x86_64__)
    if ((width == 2 || width == 4) && count > 0 && n > 0) {
        size_t p = start / count, i = start % count;
        while (n > 0) {
            size_t run = count - i < n ? count - i : n;
            uint8_t *dst = out + i * width;  // element i's first byte
            size_t k = 0;
            if (width == 2) {
                const __m128i mask = p == 0 ? _mm_set1_epi16(0x00FF) : _mm_set1_epi16((short)0xFF00);
                for (; k + 16 <= run; k += 16) {
                    __m128i v = _mm_loadu_si128((const __m128i *)(in + k));
                    __m128i lo = _mm_unpacklo_epi8(v, v), hi = _mm_unpackhi_epi8(v, v);
                    __m128i *d = (__m128i *)(dst + 2 * k);
                    __m128i o0 = _mm_loadu_si128(d), o1 = _mm_loadu_si128(d + 1);
                    _mm_storeu_si128(d, _mm_or_si128(_mm_andnot_si128(mask, o0), _mm_and_si128(mask, lo)));
                    _mm_storeu_si128(d + 1, _mm_or_si128(_mm_andnot_si128(mask, o1), _mm_and_si128(mask, hi)));
                }
            } else {
                const __m128i mask = _mm_set1_epi32((int)(0xFFu << (8 * p)));
                for (; k + 16 <= run; k += 16) {
                    __m128i v = _mm_loadu_si128((const __m128i *)(in + k));
                    __m128i lo = _mm_unpacklo_epi8(v, v), hi = _mm_unpackhi_epi8(v, v);
                    __m128i w[4] = {_mm_unpacklo_epi16(lo, lo), _mm_unpackhi_epi16(lo, lo), _mm_unpacklo_epi16(hi, hi),
                                    _mm_unpackhi_epi16(hi, hi)};
                    __m128i *d = (__m128i *)(dst + 4 * k);
                    for (int j = 0; j < 4; j++) {
                        __m128i o = _mm_loadu_si128(d + j);
                        _mm_storeu_si128(d + j, _mm_or_si128(_mm_andnot_si128(mask, o), _mm_and_si128(mask, w[j])));
                    }
                }
            }
            for (; k < run; k++) dst[k * width + p] = in[k];
            in += run;
            n -= run;
            i += run;
            if (i == count) {
                i = 0;
                p++;
            }
        }
        return;
    }
#endif
    starkv_unshuffle_range(in, n, start, out, count, width);
}

#if defined(__x86_64__)
#include <immintrin.h>

// AVX2 un-shuffle of widths 2 and 4 with the non-finite check of starkv_unshuffle_check, 32
// elements at a time, with streaming stores (the output is 32-byte aligned after a scalar
// head). Returns -1 when the output's alignment does not allow it (the caller falls back).
__attribute__((target("avx2")))
static int unshuffle_check_avx2(const uint8_t *in, uint8_t *out, size_t count, size_t width, int kind) {
    size_t head = (32 - ((uintptr_t)out & 31)) & 31;
    if (head % width != 0) return -1;
    head /= width;
    if (head > count) head = count;
    const __m256i zero = _mm256_setzero_si256();
    const __m256i top = _mm256_set1_epi8(kind == 2 ? 0x7C : 0x7F);
    const int needsLow = kind != 2;
    __m256i flagged = zero;
    size_t i = head;
    if (width == 2) {
        const uint8_t *p0 = in, *p1 = in + count;
        for (; i + 32 <= count; i += 32) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(p0 + i));
            __m256i b = _mm256_loadu_si256((const __m256i *)(p1 + i));
            // Per 128-bit lane: lo = elements 0-7 of the lane, hi = 8-15.
            __m256i lo = _mm256_unpacklo_epi8(a, b), hi = _mm256_unpackhi_epi8(a, b);
            _mm256_stream_si256((__m256i *)(out + 2 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_stream_si256((__m256i *)(out + 2 * i + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
            __m256i e = _mm256_cmpeq_epi8(_mm256_and_si256(b, top), top);
            if (needsLow) e = _mm256_and_si256(e, _mm256_cmpgt_epi8(zero, a));
            flagged = _mm256_or_si256(flagged, e);
        }
    } else {
        const uint8_t *p0 = in, *p1 = in + count, *p2 = in + 2 * count, *p3 = in + 3 * count;
        for (; i + 32 <= count; i += 32) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(p0 + i));
            __m256i b = _mm256_loadu_si256((const __m256i *)(p1 + i));
            __m256i c = _mm256_loadu_si256((const __m256i *)(p2 + i));
            __m256i d = _mm256_loadu_si256((const __m256i *)(p3 + i));
            __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
            __m256i cd_lo = _mm256_unpacklo_epi8(c, d), cd_hi = _mm256_unpackhi_epi8(c, d);
            // Per lane: q0 = elements 0-3, q1 = 4-7, q2 = 8-11, q3 = 12-15.
            __m256i q0 = _mm256_unpacklo_epi16(ab_lo, cd_lo), q1 = _mm256_unpackhi_epi16(ab_lo, cd_lo);
            __m256i q2 = _mm256_unpacklo_epi16(ab_hi, cd_hi), q3 = _mm256_unpackhi_epi16(ab_hi, cd_hi);
            __m256i *o = (__m256i *)(out + 4 * i);
            _mm256_stream_si256(o, _mm256_permute2x128_si256(q0, q1, 0x20));
            _mm256_stream_si256(o + 1, _mm256_permute2x128_si256(q2, q3, 0x20));
            _mm256_stream_si256(o + 2, _mm256_permute2x128_si256(q0, q1, 0x31));
            _mm256_stream_si256(o + 3, _mm256_permute2x128_si256(q2, q3, 0x31));
            __m256i e = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(d, top), top), _mm256_cmpgt_epi8(zero, c));
            flagged = _mm256_or_si256(flagged, e);
        }
    }
    _mm_sfence();
    // The scalar head [0, head) and tail [i, count).
    for (size_t p = 0; p < width; p++) {
        const uint8_t *src = in + p * count;
        for (size_t j = 0; j < head; j++) out[j * width + p] = src[j];
        for (size_t j = i; j < count; j++) out[j * width + p] = src[j];
    }
    if (kind == 0) return 0;
    if (!_mm256_testz_si256(flagged, flagged)) return 1;
    return starkv_first_nonfinite(out, head, kind) >= 0 || (i < count && starkv_first_nonfinite(out + i * width, count - i, kind) >= 0);
}
#endif

int starkv_unshuffle_check(const uint8_t *in, uint8_t *out, size_t count, size_t width, int kind) {
#if defined(__x86_64__)
    // An element is NaN or infinite when its exponent bits are all ones:
    //   binary16 (width 2): high byte & 0x7C == 0x7C;
    //   bfloat16 (width 2): high byte & 0x7F == 0x7F and low byte & 0x80;
    //   binary32 (width 4): byte 3 & 0x7F == 0x7F and byte 2 & 0x80.
    // Those bytes are whole planes of the shuffled input, compared 16 elements at a time.
    const int checked = (width == 2 && (kind == 2 || kind == 3)) || (width == 4 && kind == 4);
    if ((checked || kind == 0) && (width == 2 || width == 4) && __builtin_cpu_supports("avx2")) {
        int r = unshuffle_check_avx2(in, out, count, width, kind);
        if (r >= 0) return r;
    }
    if (checked) {
        const __m128i zero = _mm_setzero_si128();
        const __m128i top = _mm_set1_epi8(kind == 2 ? 0x7C : 0x7F);
        const int needsLow = kind != 2;  // the exponent's lowest bit sits in the byte below
        __m128i flagged = zero;
        size_t i = 0;
        // Streaming stores when the output is 16-byte aligned: the output is written once and
        // read much later, so it need not be fetched into the cache first.
        const int stream = ((uintptr_t)out & 15) == 0;
#define STORE(p, v) (stream ? _mm_stream_si128((p), (v)) : _mm_storeu_si128((p), (v)))
        if (width == 2) {
            const uint8_t *p0 = in, *p1 = in + count;
            for (; i + 16 <= count; i += 16) {
                __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i));
                __m128i b = _mm_loadu_si128((const __m128i *)(p1 + i));
                STORE((__m128i *)(out + 2 * i), _mm_unpacklo_epi8(a, b));
                STORE((__m128i *)(out + 2 * i + 16), _mm_unpackhi_epi8(a, b));
                __m128i e = _mm_cmpeq_epi8(_mm_and_si128(b, top), top);
                if (needsLow) e = _mm_and_si128(e, _mm_cmplt_epi8(a, zero));
                flagged = _mm_or_si128(flagged, e);
            }
        } else {
            const uint8_t *p0 = in, *p1 = in + count, *p2 = in + 2 * count, *p3 = in + 3 * count;
            for (; i + 16 <= count; i += 16) {
                __m128i a = _mm_loadu_si128((const __m128i *)(p0 + i));
                __m128i b = _mm_loadu_si128((const __m128i *)(p1 + i));
                __m128i c = _mm_loadu_si128((const __m128i *)(p2 + i));
                __m128i d = _mm_loadu_si128((const __m128i *)(p3 + i));
                __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
                __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
                STORE((__m128i *)(out + 4 * i), _mm_unpacklo_epi16(ab_lo, cd_lo));
                STORE((__m128i *)(out + 4 * i + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
                STORE((__m128i *)(out + 4 * i + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
                STORE((__m128i *)(out + 4 * i + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
                __m128i e = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(d, top), top), _mm_cmplt_epi8(c, zero));
                flagged = _mm_or_si128(flagged, e);
            }
        }
#undef STORE
        if (stream) _mm_sfence();
        for (size_t p = 0; p < width; p++) {
            const uint8_t *src = in + p * count;
            for (size_t j = i; j < count; j++) out[j * width + p] = src[j];
        }
        if (_mm_movemask_epi8(flagged) != 0) return 1;
        return i < count && starkv_first_nonfinite(out + i * width, count - i, kind) >= 0;
    }
#endif
    starkv_unshuffle_fast(in, out, count, width);
    return kind != 0 && starkv_first_nonfinite_fast(out, count, kind) >= 0;
}

long starkv_first_nonfinite_fast(const uint8_t *data, size_t count, int kind) {
    size_t i = 0;
#if defined(__x86_64__)
    // Skip 16-byte blocks without a non-finite element; the portable loop finds the index in
    // (and after) the first block that has one.
    size_t width = kind == 2 || kind == 3 ? 2 : kind == 4 ? 4 : kind == 8 ? 8 : 0;
    if (width != 0) {
        const size_t per = 16 / width;
        __m128i m;
        int lanes = 0xFFFF;
        if (kind == 2) m = _mm_set1_epi16(0x7C00);
        else if (kind == 3) m = _mm_set1_epi16(0x7F80);
        else if (kind == 4) m = _mm_set1_epi32(0x7F800000);
        else {
            m = _mm_set_epi32(0x7FF00000, 0, 0x7FF00000, 0);  // the high word of each binary64
            lanes = 0xF0F0;
        }
        for (; i + per <= count; i += per) {
            __m128i v = _mm_and_si128(_mm_loadu_si128((const __m128i *)(data + i * width)), m);
            __m128i e = kind == 2 || kind == 3 ? _mm_cmpeq_epi16(v, m) : _mm_cmpeq_epi32(v, m);
            if (_mm_movemask_epi8(e) & lanes) break;
        }
    }
#endif
    long r = starkv_first_nonfinite(data + i * (kind == 2 || kind == 3 ? 2 : kind == 4 ? 4 : 8), count - i, kind);
    return r < 0 ? -1 : r + (long)i;
}
