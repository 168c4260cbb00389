// Kept rows as bitmaps (include/starkv_keptrows.h). A sweep's policies select every budget's
// kept row from one ordering (docs/policies.md "Sweeps"); building the row as a bitmap straight
// from the order keys is one compare per position, where a list of positions costs a write per
// position and a bitmap built from that list another pass. The AVX-512 paths compare 16 keys per
// instruction; the portable paths give the same bits.
#include "include/starkv_keptrows.h"
#include <stdatomic.h>
#include <string.h>

// Tests switch the portable paths on while other threads may be running kernels.
static _Atomic int force_portable = 0;
void starkv_keptrows_force_portable(int on) { atomic_store_explicit(&force_portable, on, memory_order_relaxed); }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define STARKV_X86 1
#include <immintrin.h>
static int have_avx512(void) {
    return !atomic_load_explicit(&force_portable, memory_order_relaxed) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#else
static int have_avx512(void) { return 0; }
#endif

// Keeps the lowest `*ties` set bits of `equal` (positions tied with the cut, lowest first) and
// counts them off.
static inline uint64_t take_ties(uint64_t equal, int64_t *ties) {
    if (equal == 0 || *ties <= 0) return 0;
    int64_t c = __builtin_popcountll(equal);
    if (c <= *ties) { *ties -= c; return equal; }
    uint64_t taken = 0;
    while (*ties > 0) {
        uint64_t low = equal & (0 - equal);
        taken |= low;
        equal ^= low;
        *ties -= 1;
    }
    return taken;
}

// The bits of positions [lo, hi) that lie in lo's word, and how many there are (`*span`).
static inline uint64_t word_bits(int64_t lo, int64_t hi, int64_t *span) {
    int64_t s = lo & 63;
    *span = 64 - s < hi - lo ? 64 - s : hi - lo;
    return *span == 64 ? ~(uint64_t)0 : (((uint64_t)1 << *span) - 1) << s;
}

static void set_range(uint64_t *words, int64_t lo, int64_t hi) {
    int64_t span;
    for (; lo < hi; lo += span) words[lo >> 6] |= word_bits(lo, hi, &span);
}

static int64_t count_bits(const uint64_t *words, int64_t word_count) {
    int64_t c = 0;
    for (int64_t w = 0; w < word_count; w++) c += __builtin_popcountll(words[w]);
    return c;
}

#define PORTABLE_BLOCK(KEY_T)                                                       \
    for (; base < n; base += 64) {                                                  \
        int64_t m = n - base < 64 ? n - base : 64;                                  \
        uint64_t greater = 0, equal = 0;                                            \
        for (int64_t i = 0; i < m; i++) {                                           \
            KEY_T key = keys[base + i];                                             \
            greater |= (uint64_t)(key > cut) << i;                                  \
            equal |= (uint64_t)(key == cut) << i;                                   \
        }                                                                           \
        words[base >> 6] = greater | take_ties(equal, &ties);                       \
    }

#ifdef STARKV_X86
__attribute__((target("avx512f,avx512bw")))
static int64_t ranked_u32_avx512(const uint32_t *keys, int64_t n, uint32_t cut, int64_t ties, uint64_t *words) {
    const __m512i c = _mm512_set1_epi32((int)cut);
    int64_t base = 0;
    for (; base + 64 <= n; base += 64) {
        __m512i k0 = _mm512_loadu_si512((const void *)(keys + base));
        __m512i k1 = _mm512_loadu_si512((const void *)(keys + base + 16));
        __m512i k2 = _mm512_loadu_si512((const void *)(keys + base + 32));
        __m512i k3 = _mm512_loadu_si512((const void *)(keys + base + 48));
        uint64_t greater = (uint64_t)_mm512_cmpgt_epu32_mask(k0, c) | (uint64_t)_mm512_cmpgt_epu32_mask(k1, c) << 16 |
                           (uint64_t)_mm512_cmpgt_epu32_mask(k2, c) << 32 | (uint64_t)_mm512_cmpgt_epu32_mask(k3, c) << 48;
        uint64_t word = greater;
        if (ties > 0) {
            uint64_t equal = (uint64_t)_mm512_cmpeq_epu32_mask(k0, c) | (uint64_t)_mm512_cmpeq_epu32_mask(k1, c) << 16 |
                             (uint64_t)_mm512_cmpeq_epu32_mask(k2, c) << 32 | (uint64_t)_mm512_cmpeq_epu32_mask(k3, c) << 48;
            word |= take_ties(equal, &ties);
        }
        words[base >> 6] = word;
    }
    PORTABLE_BLOCK(uint32_t)
    return ties;
}

__attribute__((target("avx512f,avx512bw")))
static int64_t positions_avx512(const uint64_t *words, int64_t length, int32_t *out) {
    const __m512i step = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t c = 0;
    int64_t word_count = (length + 63) >> 6;
    for (int64_t w = 0; w < word_count; w++) {
        uint64_t bits = words[w];
        for (int q = 0; q < 4; q++) {
            __mmask16 m = (__mmask16)(bits >> (16 * q));
            _mm512_storeu_si512((void *)(out + c), _mm512_maskz_compress_epi32(m, iota));
            c += __builtin_popcount((unsigned)m);
            iota = _mm512_add_epi32(iota, step);
        }
    }
    return c;
}
#endif

// The start of both ranked bitmaps: zeroes the words (when `length` is valid) and returns their
// count, or -1 when the row does not fit (starkv_keptrows.h).
static int64_t begin_ranked(int64_t n, int64_t tail_lo, int64_t tail_hi, int64_t length, uint64_t *words) {
    if (length < 0) return -1;
    int64_t word_count = (length + 63) >> 6;
    if (word_count > 0) memset(words, 0, (size_t)word_count * sizeof(uint64_t));
    if (n < 0 || n > tail_lo || tail_lo > tail_hi || tail_hi > length) return -1;
    return word_count;
}

// The end of both: the window's bits, then the row's size.
static int64_t end_ranked(uint64_t *words, int64_t word_count, int64_t tail_lo, int64_t tail_hi) {
    set_range(words, tail_lo, tail_hi);
    return count_bits(words, word_count);
}

int64_t starkv_ranked_bitmap_u32(const uint32_t *keys, int64_t n, uint32_t cut, int64_t ties, int64_t tail_lo,
                                 int64_t tail_hi, int64_t length, uint64_t *words) {
    int64_t word_count = begin_ranked(n, tail_lo, tail_hi, length, words);
    if (word_count <= 0) return word_count;
    int64_t base = 0;
#ifdef STARKV_X86
    if (have_avx512()) {
        ranked_u32_avx512(keys, n, cut, ties, words);
    } else
#endif
    {
        PORTABLE_BLOCK(uint32_t)
    }
    return end_ranked(words, word_count, tail_lo, tail_hi);
}

int64_t starkv_ranked_bitmap_u64(const uint64_t *keys, int64_t n, uint64_t cut, int64_t ties, int64_t tail_lo,
                                 int64_t tail_hi, int64_t length, uint64_t *words) {
    int64_t word_count = begin_ranked(n, tail_lo, tail_hi, length, words);
    if (word_count <= 0) return word_count;
    int64_t base = 0;
    PORTABLE_BLOCK(uint64_t)
    return end_ranked(words, word_count, tail_lo, tail_hi);
}

int64_t starkv_bitmap_positions(const uint64_t *words, int64_t length, int32_t *out) {
#ifdef STARKV_X86
    if (have_avx512()) return positions_avx512(words, length, out);
#endif
    int64_t c = 0;
    int64_t word_count = (length + 63) >> 6;
    for (int64_t w = 0; w < word_count; w++) {
        uint64_t bits = words[w];
        while (bits) {
            out[c++] = (int32_t)((w << 6) + __builtin_ctzll(bits));
            bits &= bits - 1;
        }
    }
    return c;
}

int64_t starkv_bitmap_count(const uint64_t *words, int64_t lo, int64_t hi) {
    int64_t c = 0, span;
    for (; lo < hi; lo += span) c += __builtin_popcountll(words[lo >> 6] & word_bits(lo, hi, &span));
    return c;
}

// ---- Widening stored floats to fp32 (starkv_keptrows.h) ------------------------------------
// Scoring reads f16/bf16 trace fields as fp32 rows. F16C's conversion gives the same bits as
// the table of Float(Float16(bitPattern:)) for every pattern (tested over all 65,536): exact for
// normal and subnormal values, infinities kept, NaNs quieted with their payload.

#ifdef STARKV_X86
__attribute__((target("avx512f")))
static void widen_half_avx512(const uint16_t *src, int64_t n, float *out) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++) out[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}

__attribute__((target("avx2,f16c")))
static void widen_half_f16c(const uint16_t *src, int64_t n, float *out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) out[i] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(src[i])));
}
#endif

void starkv_widen_to_float(const uint8_t *src, int kind, const float *half_table, int64_t n, float *out) {
    if (n <= 0) return;
    switch (kind) {
    case 2: {
        const uint16_t *h = (const uint16_t *)src;
#ifdef STARKV_X86
        if (have_avx512()) { widen_half_avx512(h, n, out); return; }
        if (!atomic_load_explicit(&force_portable, memory_order_relaxed) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) { widen_half_f16c(h, n, out); return; }
#endif
        for (int64_t i = 0; i < n; i++) out[i] = half_table[h[i]];
        return;
    }
    case 3: {
        const uint16_t *b = (const uint16_t *)src;
        uint32_t *o = (uint32_t *)out;
        for (int64_t i = 0; i < n; i++) o[i] = (uint32_t)b[i] << 16;
        return;
    }
    default:
        memcpy(out, src, (size_t)n * 4);
        return;
    }
}
