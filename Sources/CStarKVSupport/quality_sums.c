// Kept-mass sums of the decode quality proxy and the kept-set bitmap of the digest
// (starkv_quality.h). Each head's sum is one fp64 accumulator fed in the row's order, so the bits
// equal a plain loop; heads are interleaved only to keep several independent chains in flight.
#include "include/starkv_quality.h"
#include <stdatomic.h>
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

// Whether idx[0 ..< n] is strictly ascending inside [0, length) (branch-free, so it vectorises).
static int ascending_inside(const int32_t *idx, int64_t n, int64_t length) {
    if (n == 0) return 1;
    if (idx[0] < 0 || (int64_t)idx[n - 1] >= length) return 0;
    int bad = 0;
    for (int64_t t = 0; t + 1 < n; t++) bad |= idx[t] >= idx[t + 1];
    return !bad;
}

// Whether idx[0 ..< n] is exactly 0, 1, …, length − 1.
static int is_identity(const int32_t *idx, int64_t n, int64_t length) {
    if (n != length) return 0;
    int bad = 0;
    for (int64_t t = 0; t < n; t++) bad |= idx[t] != (int32_t)t;
    return !bad;
}

// One head, positions checked one by one (a row that is not ascending inside the prompt).
static double checked_sum(const uint8_t *data, int kind, const float *half_table, int64_t length, int64_t base,
                          const int32_t *idx, int64_t n) {
    double a = 0.0;
    for (int64_t t = 0; t < n; t++) {
        int64_t j = idx[t];
        if (j >= 0 && j < length) a += (double)load_value(data, kind, half_table, base + j);
    }
    return a;
}

#define GROUP 8

// GROUP heads whose rows are valid: the common prefix interleaved, then each tail alone.
#define UNCHECKED_GROUP(KIND)                                                                                  \
    do {                                                                                                       \
        double a[GROUP] = {0};                                                                                 \
        for (int64_t t = 0; t < common; t++) {                                                                 \
            for (int g = 0; g < GROUP; g++) a[g] += (double)load_value(data, KIND, half_table, b[g] + pp[g][t]); \
        }                                                                                                      \
        for (int g = 0; g < GROUP; g++) {                                                                      \
            for (int64_t t = common; t < c[g]; t++) a[g] += (double)load_value(data, KIND, half_table, b[g] + pp[g][t]); \
            out[hs[g]] = a[g];                                                                                 \
        }                                                                                                      \
    } while (0)

// One head whose row is valid.
static double unchecked_sum(const uint8_t *data, int kind, const float *half_table, int64_t base, const int32_t *idx, int64_t n) {
    double a = 0.0;
    for (int64_t t = 0; t < n; t++) a += (double)load_value(data, kind, half_table, base + idx[t]);
    return a;
}

void starkv_kept_sums(const uint8_t *data, int kind, const float *half_table, int64_t length, int64_t heads,
                      const int64_t *head_row, const int32_t *const *row_ptr, const int64_t *row_count, int64_t rows,
                      const double *full_total, double *out) {
    // Row states, classified once per row: 0 = check every position, 1 = ascending inside
    // [0, length), 2 = every position in order. More rows than this bound (never: a layer has at
    // most one row per head) are classified per head instead.
    enum { MAX_ROWS = 1024 };
    unsigned char state[MAX_ROWS];
    int per_row = rows <= MAX_ROWS;
    if (per_row)
        for (int64_t r = 0; r < rows; r++) {
            const int32_t *p = row_ptr[r];
            state[r] = is_identity(p, row_count[r], length) ? 2 : (ascending_inside(p, row_count[r], length) ? 1 : 0);
        }
    int64_t hs[GROUP];
    int filled = 0;
    for (int64_t h = 0; h < heads; h++) {
        int64_t r = head_row[h];
        const int32_t *p = row_ptr[r];
        int st = per_row ? state[r] : (ascending_inside(p, row_count[r], length) ? 1 : 0);
        if (st == 2) {
            out[h] = full_total[h];
        } else if (st == 0) {
            out[h] = checked_sum(data, kind, half_table, length, h * length, p, row_count[r]);
        } else {
            hs[filled++] = h;
            if (filled == GROUP) {
                int64_t b[GROUP], c[GROUP];
                const int32_t *pp[GROUP];
                int64_t common = INT64_MAX;
                for (int g = 0; g < GROUP; g++) {
                    int64_t rg = head_row[hs[g]];
                    b[g] = hs[g] * length;
                    pp[g] = row_ptr[rg];
                    c[g] = row_count[rg];
                    if (c[g] < common) common = c[g];
                }
                switch (kind) {
                case 2: UNCHECKED_GROUP(2); break;
                case 3: UNCHECKED_GROUP(3); break;
                default: UNCHECKED_GROUP(4); break;
                }
                filled = 0;
            }
        }
    }
    for (int g = 0; g < filled; g++) {
        int64_t r = head_row[hs[g]];
        out[hs[g]] = unchecked_sum(data, kind, half_table, hs[g] * length, row_ptr[r], row_count[r]);
    }
}

int starkv_bitmap_from_sorted(const int32_t *idx, int64_t n, int64_t length, uint64_t *words) {
    int64_t word_count = (length + 63) / 64;
    if (word_count <= 0) return n == 0;
    if (!ascending_inside(idx, n, length)) return 0;
    memset(words, 0, (size_t)word_count * sizeof(uint64_t));
    // Runs of 64 consecutive positions set 64 bits at once (dense rows); otherwise bits gather in
    // a register that is stored every time (no load, so no chain through memory) and starts from
    // zero in a new word. The row is known to be strictly ascending inside [0, length).
    int64_t word = -1;
    uint64_t bits = 0;
    int64_t t = 0;
    while (t < n) {
        if (t + 64 <= n && idx[t + 63] - idx[t] == 63) {
            int64_t j = idx[t], w = j >> 6, s = j & 63;
            words[w] |= s == 0 ? ~(uint64_t)0 : ~(uint64_t)0 << s;
            if (s != 0) words[w + 1] |= ~(uint64_t)0 >> (64 - s);
            t += 64;
            word = -1;  // the register no longer mirrors a word
            continue;
        }
        int64_t j = idx[t], w = j >> 6;
        if (w != word) { bits = words[w]; word = w; }
        bits |= (uint64_t)1 << (j & 63);
        words[w] = bits;
        t++;
    }
    return 1;
}

// ---- Kept sums of bitmap rows (starkv_quality.h) -------------------------------------------
// Sweeps hand the kept rows over as bitmaps (docs/policies.md "Sweeps"). Heads then run in the
// lanes of a vector: for each position in ascending order, every head whose row keeps it adds
// its value to its own fp64 accumulator (a masked add leaves the other lanes untouched, so each
// lane is exactly the one-accumulator chain of a plain loop). The values come from a copy of
// the layer transposed to [position][head], made once per step.

// Tests switch the lane kernel off while other threads may be summing.
static _Atomic int sums_force_portable = 0;
void starkv_kept_sums_force_portable(int on) { atomic_store_explicit(&sums_force_portable, on, memory_order_relaxed); }

void starkv_transpose_heads(const uint8_t *data, int kind, const float *half_table, int64_t heads, int64_t length,
                            int64_t stride, float *out) {
    // Positions in blocks of 64 so that the block's output rows stay in cache while every head
    // is written into them.
    for (int64_t j0 = 0; j0 < length; j0 += 64) {
        int64_t j1 = j0 + 64 < length ? j0 + 64 : length;
        for (int64_t j = j0; j < j1; j++)
            for (int64_t h = heads; h < stride; h++) out[j * stride + h] = 0.0f;
        for (int64_t h = 0; h < heads; h++) {
            int64_t base = h * length;
            switch (kind) {
            case 2:
                for (int64_t j = j0; j < j1; j++) {
                    uint16_t v;
                    memcpy(&v, data + (base + j) * 2, 2);
                    out[j * stride + h] = half_table[v];
                }
                break;
            case 3:
                for (int64_t j = j0; j < j1; j++) {
                    uint16_t v;
                    memcpy(&v, data + (base + j) * 2, 2);
                    uint32_t w = (uint32_t)v << 16;
                    memcpy(out + j * stride + h, &w, 4);
                }
                break;
            default:
                for (int64_t j = j0; j < j1; j++) memcpy(out + j * stride + h, data + (base + j) * 4, 4);
            }
        }
    }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

int starkv_kept_sums_bitmaps_available(void) {
    return !atomic_load_explicit(&sums_force_portable, memory_order_relaxed) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq");
}

#define SETS 6

// Up to SETS selections (e.g. the budgets of one policy in a sweep) over the same values: every
// position's eight-head vectors are loaded once and added into each selection's accumulators, so
// the values stream from memory once per SETS selections.
__attribute__((target("avx512f,avx512bw,avx512dq")))
static void sums_bitmaps_avx512(const float *t, int64_t stride, int64_t length, int64_t heads, int64_t sets,
                                const int64_t *head_row, const uint64_t *const *words, int64_t words_per_row, double *out) {
    int64_t groups = (heads + 7) / 8;
    _Alignas(64) uint8_t masks[SETS][4][64];
    for (int64_t g0 = 0; g0 < groups; g0 += 4) {
        // Four groups of eight heads (the stride is a multiple of 32, so the loads of a missing
        // group stay inside the row and its lane masks are zero).
        __m512d acc[SETS][4];
        for (int s = 0; s < SETS; s++)
            for (int gi = 0; gi < 4; gi++) acc[s][gi] = _mm512_setzero_pd();
        for (int64_t w = 0; w * 64 < length; w++) {
            // Byte j of (set s, group g): bit i set when head 8g + i of set s keeps position 64w + j.
            for (int s = 0; s < SETS; s++) {
                for (int gi = 0; gi < 4; gi++) {
                    __m512i m = _mm512_setzero_si512();
                    for (int i = 0; i < 8 && s < sets; i++) {
                        int64_t h = (g0 + gi) * 8 + i;
                        if (h >= heads) break;
                        uint64_t bits = words[s][head_row[s * heads + h] * words_per_row + w];
                        m = _mm512_or_si512(m, _mm512_and_si512(_mm512_movm_epi8(bits), _mm512_set1_epi8((char)(1 << i))));
                    }
                    _mm512_store_si512((void *)masks[s][gi], m);
                }
            }
            int64_t jn = length - w * 64 < 64 ? length - w * 64 : 64;
            const float *p = t + (w * 64) * stride + g0 * 8;
            for (int64_t j = 0; j < jn; j++, p += stride) {
                __m512d v0 = _mm512_cvtps_pd(_mm256_loadu_ps(p)), v1 = _mm512_cvtps_pd(_mm256_loadu_ps(p + 8));
                __m512d v2 = _mm512_cvtps_pd(_mm256_loadu_ps(p + 16)), v3 = _mm512_cvtps_pd(_mm256_loadu_ps(p + 24));
                for (int s = 0; s < SETS; s++) {
                    acc[s][0] = _mm512_mask_add_pd(acc[s][0], (__mmask8)masks[s][0][j], acc[s][0], v0);
                    acc[s][1] = _mm512_mask_add_pd(acc[s][1], (__mmask8)masks[s][1][j], acc[s][1], v1);
                    acc[s][2] = _mm512_mask_add_pd(acc[s][2], (__mmask8)masks[s][2][j], acc[s][2], v2);
                    acc[s][3] = _mm512_mask_add_pd(acc[s][3], (__mmask8)masks[s][3][j], acc[s][3], v3);
                }
            }
        }
        for (int64_t s = 0; s < sets; s++) {
            _Alignas(64) double lanes[32];
            for (int gi = 0; gi < 4; gi++) _mm512_store_pd(lanes + 8 * gi, acc[s][gi]);
            for (int i = 0; i < 32 && g0 * 8 + i < heads; i++) out[s * heads + g0 * 8 + i] = lanes[i];
        }
    }
}

int starkv_kept_sums_bitmaps(const float *transposed, int64_t stride, int64_t length, int64_t heads, int64_t sets,
                             const int64_t *head_row, const uint64_t *const *words, int64_t words_per_row, double *out) {
    if (!starkv_kept_sums_bitmaps_available() || stride % 32 != 0 || stride < heads || heads <= 0 || length < 0 || sets < 0 ||
        words_per_row < (length + 63) / 64)
        return 0;
    for (int64_t s0 = 0; s0 < sets; s0 += SETS) {
        int64_t n = sets - s0 < SETS ? sets - s0 : SETS;
        sums_bitmaps_avx512(transposed, stride, length, heads, n, head_row + s0 * heads, words + s0, words_per_row, out + s0 * heads);
    }
    return 1;
}
#else
int starkv_kept_sums_bitmaps_available(void) { return 0; }
int starkv_kept_sums_bitmaps(const float *transposed, int64_t stride, int64_t length, int64_t heads, int64_t sets,
                             const int64_t *head_row, const uint64_t *const *words, int64_t words_per_row, double *out) {
    (void)transposed; (void)stride; (void)length; (void)heads; (void)sets; (void)head_row; (void)words; (void)words_per_row;
    (void)out;
    return 0;
}
#endif
