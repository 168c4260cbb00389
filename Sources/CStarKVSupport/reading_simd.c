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
    const uint8_t *t = c + block;
    size_t rest = n - 3 * block;
    while (rest >= 8) {
        uint64_t v;
        memcpy(&v, t, 8);
        c2 = _mm_crc32_u64(c2, v);
        t += 8;
        rest -= 8;
    }
    uint32_t c2s = (uint32_t)c2;
    while (rest--) c2s = _mm_crc32_u8(c2s, *t++);
    uint32_t ab = starkv_crc32c_combine(~(uint32_t)c0, ~(uint32_t)c1, block);
    return starkv_crc32c_combine(ab, ~c2s, n - 2 * block);
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
