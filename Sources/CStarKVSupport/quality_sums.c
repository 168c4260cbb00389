// Kept-mass sums of the decode quality proxy (starkv_quality.h): four rows interleaved, each row
// summed in its own index order with one fp64 accumulator. A position outside [0, length) adds
// -0.0, the exact identity of IEEE addition, so the result equals skipping it.
#include "include/starkv_quality.h"
#include <string.h>

static inline float load_value(const uint8_t *data, int kind, const float *half_table, int64_t at) {
    switch (kind) {
    case 2: {
        uint16_t h;
        memcpy(&h, data + at * 2, 2);
        return half_table[h];
    }
    case 3: {
        uint16_t b;
        memcpy(&b, data + at * 2, 2);
        uint32_t w = (uint32_t)b << 16;
        float f;
        memcpy(&f, &w, 4);
        return f;
    }
    default: {
        float f;
        memcpy(&f, data + at * 4, 4);
        return f;
    }
    }
}

static inline double term(const uint8_t *data, int kind, const float *half_table, int64_t length, int64_t base, int32_t j) {
    if (j < 0 || (int64_t)j >= length) return -0.0;
    return (double)load_value(data, kind, half_table, base + j);
}

#define KEPT_SUMS4(KIND)                                                                                   \
    do {                                                                                                   \
        for (int64_t t = 0; t < common; t++) {                                                             \
            a0 += term(data, KIND, half_table, length, base[0], i0[t]);                                    \
            a1 += term(data, KIND, half_table, length, base[1], i1[t]);                                    \
            a2 += term(data, KIND, half_table, length, base[2], i2[t]);                                    \
            a3 += term(data, KIND, half_table, length, base[3], i3[t]);                                    \
        }                                                                                                  \
        for (int64_t t = common; t < count[0]; t++) a0 += term(data, KIND, half_table, length, base[0], i0[t]); \
        for (int64_t t = common; t < count[1]; t++) a1 += term(data, KIND, half_table, length, base[1], i1[t]); \
        for (int64_t t = common; t < count[2]; t++) a2 += term(data, KIND, half_table, length, base[2], i2[t]); \
        for (int64_t t = common; t < count[3]; t++) a3 += term(data, KIND, half_table, length, base[3], i3[t]); \
    } while (0)

void starkv_kept_sums4(const uint8_t *data, int kind, const float *half_table, int64_t length,
                       const int64_t base[4], const int32_t *const idx[4], const int64_t count[4],
                       double out[4]) {
    const int32_t *i0 = idx[0], *i1 = idx[1], *i2 = idx[2], *i3 = idx[3];
    int64_t common = count[0];
    for (int r = 1; r < 4; r++) if (count[r] < common) common = count[r];
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    // One loop per kind, so that the load is resolved at compile time.
    switch (kind) {
    case 2: KEPT_SUMS4(2); break;
    case 3: KEPT_SUMS4(3); break;
    default: KEPT_SUMS4(4); break;
    }
    out[0] = a0;
    out[1] = a1;
    out[2] = a2;
    out[3] = a3;
}

int starkv_bitmap_from_sorted(const int32_t *idx, int64_t n, int64_t length, uint64_t *words) {
    int64_t word_count = (length + 63) / 64;
    if (word_count <= 0) return n == 0;
    memset(words, 0, (size_t)word_count * sizeof(uint64_t));
    // Bits gather in a register while positions stay in one word; the register is stored every
    // time (no load, so no chain through memory) and starts again from zero in a new word.
    int64_t prev = -1, word = 0;
    uint64_t bits = 0;
    for (int64_t t = 0; t < n; t++) {
        int64_t j = idx[t];
        if (j <= prev || j >= length) return 0;
        int64_t w = j >> 6;
        bits = (w == word ? bits : 0) | ((uint64_t)1 << (j & 63));
        words[w] = bits;
        word = w;
        prev = j;
    }
    return 1;
}
