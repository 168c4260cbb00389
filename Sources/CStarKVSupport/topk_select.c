// The top-k cuts of a row of 32-bit order keys (starkv_topk.h): the same (key, ties, equal) per
// rank as `kthLargestKeys` in Sources/StarKVPolicies/Scoring.swift, in about one pass over the row.
//
// Sampled brackets (the idea of Floyd and Rivest's SELECT, CACM 18(3), 1975): the k-th largest
// key of the row sits, with high probability, near index k·s/n from the top of a fixed-stride
// sample of s keys, so each rank gets a bracket [lo, hi] of the sample keys SIGMA standard
// deviations (sqrt(s·q·(1−q)), q = k/n) either side of that index (found by the exact select of
// the sample). One pass over the row counts the keys above each bracket and copies the keys
// inside it (brackets that overlap are merged, so they are disjoint); a bracket end that the
// sample shows tied is counted apart instead of copied, since rows hold large groups of equal
// scores. The rank's place inside its bracket is its rank minus the keys above, and the exact
// cut comes from the bucketed radix select of the bracket's few copied keys (or is an end).
// Every key equal to the cut lies inside its bracket, so the bracket's counts of that key are
// the row's. A rank that its bracket misses (a sample unlike its row), or a bracket that
// outgrows its buffer, is answered by the bucketed radix select of the whole row instead: the
// cuts never depend on the sample, only the time does.
//
// The passes have three forms, chosen at run time like reading_simd.c: AVX-512 (compress the
// bracket's keys), AVX2 + BMI2 (the same with a permutation built from the mask) and portable
// scalar code (branch-free appends). Scratch memory is O(n) (at most eight brackets' buffers).
#include "include/starkv_topk.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t rank;  // 1-based, from the largest key
    int64_t slot;  // index into the output
} want_t;

// Tuning (measured on the rows of a 7B sweep; any value gives the same cuts): rows up to
// SMALL_ROW_KEYS are sorted, the sample is one key in SAMPLE_DIV, a bracket reaches SIGMA
// standard deviations either side.
#ifndef SMALL_ROW_KEYS
#define SMALL_ROW_KEYS 24
#endif
#ifndef SAMPLE_MAX_KEYS
#define SAMPLE_MAX_KEYS 512
#endif
#ifndef SAMPLE_DIV
#define SAMPLE_DIV 16
#endif
#ifndef SIGMA
#define SIGMA 2
#endif

enum {
    SMALL_ROW = SMALL_ROW_KEYS,  // rows up to this long are sorted
    SAMPLED_MIN_ROW = 1024,  // shorter rows take the exact select
    MAX_BRACKETS = 8,
    SAMPLE_MAX = SAMPLE_MAX_KEYS,
    LOCAL_HIST = 1024,   // exact_cuts keeps histograms up to this many counters on the stack
    LOCAL_WANTS = 16,
    LOCAL_SPACE = 1024,
};

// ---- Small helpers ------------------------------------------------------------------------

static int want_order(const void *a, const void *b) {
    const want_t *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->slot < y->slot ? -1 : (x->slot > y->slot);
}

static void sort_wants(want_t *w, int64_t n) {
    if (n > 16) {
        qsort(w, (size_t)n, sizeof(want_t), want_order);
        return;
    }
    for (int64_t i = 1; i < n; i++) {
        want_t x = w[i];
        int64_t j = i;
        while (j > 0 && (w[j - 1].rank > x.rank || (w[j - 1].rank == x.rank && w[j - 1].slot > x.slot))) {
            w[j] = w[j - 1];
            j--;
        }
        w[j] = x;
    }
}

static void sort_desc_small(uint32_t *a, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        uint32_t x = a[i];
        int64_t j = i;
        while (j > 0 && a[j - 1] < x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static int bit_length64(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

static uint64_t isqrt64(uint64_t x) {
    uint64_t r = 0;
    for (int b = 31; b >= 0; b--) {
        uint64_t t = r | ((uint64_t)1 << b);
        if (t * t <= x) r = t;
    }
    return r;
}

// ---- The pass over the row ----------------------------------------------------------------

typedef struct {
    uint32_t lo, hi;      // the bracket [lo, hi]
    uint32_t base, limit;  // the keys copied: key − base < limit (unsigned)
    uint32_t *buf;        // the copied keys, cap + 16 slots
    int64_t cap;          // more than cap keys: overflow (writes stay inside the slack)
    int64_t count;        // keys copied
    int64_t above;        // keys > hi
    int split_hi, split_lo;  // whether keys == hi (== lo) are counted apart rather than copied
    int64_t eq_hi, eq_lo;  // keys == hi, keys == lo (when split)
} bracket_t;

// The scalar pass over keys[from ..< n] for bracket b, continuing the counts the vector passes
// made over keys[0 ..< from] (all zero for the scalar pass), and the bracket's results.
static inline void finish_bracket(const uint32_t *keys, int64_t from, int64_t n, bracket_t *b, int64_t c, int64_t above,
                                  int64_t eq_hi, int64_t eq_lo) {
    uint32_t base = b->base, limit = b->limit, hi = b->hi, lo = b->lo;
    uint32_t *buf = b->buf;
    int64_t cap = b->cap;
    for (int64_t i = from; i < n; i++) {
        uint32_t k = keys[i];
        buf[c < cap ? c : cap] = k;
        c += (uint32_t)(k - base) < limit;
        above += k > hi;
        eq_hi += k == hi;
        eq_lo += k == lo;
    }
    b->count = c;
    b->above = above;
    b->eq_hi = eq_hi;
    b->eq_lo = eq_lo;
}

static void pass_scalar(const uint32_t *keys, int64_t n, bracket_t *br, int nb) {
    for (int j = 0; j < nb; j++) finish_bracket(keys, 0, n, &br[j], 0, 0, 0, 0);
}

#if defined(__x86_64__)
#include <immintrin.h>


// NB brackets per pass, NB a constant after inlining so the brackets stay in registers.
__attribute__((target("avx512f"), always_inline)) static inline void pass512_n(const uint32_t *keys, int64_t n,
                                                                                bracket_t *br, const int nb) {
    __m512i base[MAX_BRACKETS], limit[MAX_BRACKETS], lo[MAX_BRACKETS], hi[MAX_BRACKETS];
    __m512i above[MAX_BRACKETS], eq_hi[MAX_BRACKETS], eq_lo[MAX_BRACKETS];
    int64_t c[MAX_BRACKETS], cap[MAX_BRACKETS];
    uint32_t *buf[MAX_BRACKETS];
    int split_hi[MAX_BRACKETS], split_lo[MAX_BRACKETS];
    const __m512i one = _mm512_set1_epi32(1);
    for (int j = 0; j < nb; j++) {
        split_hi[j] = br[j].split_hi;
        split_lo[j] = br[j].split_lo;
        base[j] = _mm512_set1_epi32((int)br[j].base);
        limit[j] = _mm512_set1_epi32((int)br[j].limit);
        lo[j] = _mm512_set1_epi32((int)br[j].lo);
        hi[j] = _mm512_set1_epi32((int)br[j].hi);
        above[j] = eq_hi[j] = eq_lo[j] = _mm512_setzero_si512();
        c[j] = 0;
        cap[j] = br[j].cap;
        buf[j] = br[j].buf;
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(keys + i));
#pragma GCC unroll 8
        for (int j = 0; j < nb; j++) {
            __mmask16 in = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(v, base[j]), limit[j]);
            above[j] = _mm512_mask_add_epi32(above[j], _mm512_cmpgt_epu32_mask(v, hi[j]), above[j], one);
            if (split_hi[j]) eq_hi[j] = _mm512_mask_add_epi32(eq_hi[j], _mm512_cmpeq_epu32_mask(v, hi[j]), eq_hi[j], one);
            if (split_lo[j]) eq_lo[j] = _mm512_mask_add_epi32(eq_lo[j], _mm512_cmpeq_epu32_mask(v, lo[j]), eq_lo[j], one);
            _mm512_storeu_si512((void *)(buf[j] + (c[j] < cap[j] ? c[j] : cap[j])), _mm512_maskz_compress_epi32(in, v));
            c[j] += __builtin_popcount((unsigned)in);
        }
    }
    for (int j = 0; j < nb; j++) {
        finish_bracket(keys, i, n, &br[j], c[j], _mm512_reduce_add_epi32(above[j]), _mm512_reduce_add_epi32(eq_hi[j]),
                       _mm512_reduce_add_epi32(eq_lo[j]));
    }
}

// Up to three brackets a pass: seven vectors each stay in the 32 registers.
__attribute__((target("avx512f"))) static void pass_avx512(const uint32_t *keys, int64_t n, bracket_t *br, int nb) {
    for (int j = 0; j < nb; j += 3) {
        switch (nb - j) {
        case 1: pass512_n(keys, n, br + j, 1); break;
        case 2: pass512_n(keys, n, br + j, 2); break;
        default: pass512_n(keys, n, br + j, 3); break;
        }
    }
}

__attribute__((target("avx512f"))) static void min_max_avx512(const uint32_t *keys, int64_t n, uint32_t *lo, uint32_t *hi) {
    __m512i mn = _mm512_set1_epi32(-1), mx = _mm512_setzero_si512();
    for (int64_t i = 0; i + 16 <= n; i += 16) {
        __m512i v = _mm512_loadu_si512((const void *)(keys + i));
        mn = _mm512_min_epu32(mn, v);
        mx = _mm512_max_epu32(mx, v);
    }
    *lo = (uint32_t)_mm512_reduce_min_epu32(mn);
    *hi = (uint32_t)_mm512_reduce_max_epu32(mx);
}

__attribute__((target("avx2"))) static void min_max_avx2(const uint32_t *keys, int64_t n, uint32_t *lo, uint32_t *hi) {
    __m256i mn = _mm256_set1_epi32(-1), mx = _mm256_setzero_si256();
    for (int64_t i = 0; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(keys + i));
        mn = _mm256_min_epu32(mn, v);
        mx = _mm256_max_epu32(mx, v);
    }
    uint32_t a[8], b[8];
    _mm256_storeu_si256((__m256i *)a, mn);
    _mm256_storeu_si256((__m256i *)b, mx);
    for (int t = 0; t < 8; t++) {
        *lo = a[t] < *lo ? a[t] : *lo;
        *hi = b[t] > *hi ? b[t] : *hi;
    }
}

// The lanes of v picked by the 8-bit mask m, packed to the front (BMI2 builds the permutation).
__attribute__((target("avx2,bmi2"), always_inline)) static inline __m256i compress256(__m256i v, unsigned m) {
    uint64_t spread = _pdep_u64(m, 0x0101010101010101ull) * 0xFF;
    uint64_t picked = _pext_u64(0x0706050403020100ull, spread);
    __m256i perm = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)picked));
    return _mm256_permutevar8x32_epi32(v, perm);
}

__attribute__((target("avx2,bmi2"), always_inline)) static inline void pass256_n(const uint32_t *keys, int64_t n,
                                                                                  bracket_t *br, const int nb) {
    __m256i base[MAX_BRACKETS], limit[MAX_BRACKETS], lo[MAX_BRACKETS], hi[MAX_BRACKETS];
    __m256i above[MAX_BRACKETS], eq_hi[MAX_BRACKETS], eq_lo[MAX_BRACKETS];
    int64_t c[MAX_BRACKETS], cap[MAX_BRACKETS];
    uint32_t *buf[MAX_BRACKETS];
    int split_hi[MAX_BRACKETS], split_lo[MAX_BRACKETS];
    // Unsigned compares as signed ones with the top bit flipped.
    const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
    for (int j = 0; j < nb; j++) {
        split_hi[j] = br[j].split_hi;
        split_lo[j] = br[j].split_lo;
        base[j] = _mm256_set1_epi32((int)br[j].base);
        limit[j] = _mm256_set1_epi32((int)(br[j].limit ^ 0x80000000u));
        lo[j] = _mm256_set1_epi32((int)br[j].lo);
        hi[j] = _mm256_set1_epi32((int)(br[j].hi ^ 0x80000000u));
        above[j] = eq_hi[j] = eq_lo[j] = _mm256_setzero_si256();
        c[j] = 0;
        cap[j] = br[j].cap;
        buf[j] = br[j].buf;
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(keys + i));
        __m256i vf = _mm256_xor_si256(v, flip);
#pragma GCC unroll 8
        for (int j = 0; j < nb; j++) {
            __m256i off = _mm256_xor_si256(_mm256_sub_epi32(v, base[j]), flip);
            __m256i in = _mm256_cmpgt_epi32(limit[j], off);  // all ones for a copied key
            above[j] = _mm256_sub_epi32(above[j], _mm256_cmpgt_epi32(vf, hi[j]));
            if (split_hi[j]) eq_hi[j] = _mm256_sub_epi32(eq_hi[j], _mm256_cmpeq_epi32(vf, hi[j]));
            if (split_lo[j]) eq_lo[j] = _mm256_sub_epi32(eq_lo[j], _mm256_cmpeq_epi32(v, lo[j]));
            unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in));
            _mm256_storeu_si256((__m256i *)(buf[j] + (c[j] < cap[j] ? c[j] : cap[j])), compress256(v, m));
            c[j] += __builtin_popcount(m);
        }
    }
    for (int j = 0; j < nb; j++) {
        uint32_t la[8], lh[8], ll[8];
        _mm256_storeu_si256((__m256i *)la, above[j]);
        _mm256_storeu_si256((__m256i *)lh, eq_hi[j]);
        _mm256_storeu_si256((__m256i *)ll, eq_lo[j]);
        int64_t a = 0, eh = 0, el = 0;
        for (int t = 0; t < 8; t++) {
            a += la[t];
            eh += lh[t];
            el += ll[t];
        }
        finish_bracket(keys, i, n, &br[j], c[j], a, eh, el);
    }
}

// One bracket a pass: seven vectors each, and 16 registers.
__attribute__((target("avx2,bmi2"))) static void pass_avx2(const uint32_t *keys, int64_t n, bracket_t *br, int nb) {
    for (int j = 0; j < nb; j++) pass256_n(keys, n, br + j, 1);
}
#endif

// ---- Exact select (the bucketed radix select of kthLargestKeys) ----------------------------

static void run_pass(int path, const uint32_t *keys, int64_t n, bracket_t *br, int nb) {
    switch (path) {
#if defined(__x86_64__)
    case STARKV_TOPK_AVX512: pass_avx512(keys, n, br, nb); break;
    case STARKV_TOPK_AVX2: pass_avx2(keys, n, br, nb); break;
#endif
    default: pass_scalar(keys, n, br, nb); break;
    }
}

static void min_max(int path, const uint32_t *keys, int64_t n, uint32_t *lo_out, uint32_t *hi_out) {
    uint32_t lo = UINT32_MAX, hi = 0;
    int64_t i = 0;
    (void)path;
#if defined(__x86_64__)
    if (path == STARKV_TOPK_AVX512) {
        min_max_avx512(keys, n, &lo, &hi);
        i = n & ~(int64_t)15;
    } else if (path == STARKV_TOPK_AVX2) {
        min_max_avx2(keys, n, &lo, &hi);
        i = n & ~(int64_t)7;
    }
#endif
    for (; i < n; i++) {
        uint32_t k = keys[i];
        lo = k < lo ? k : lo;
        hi = k > hi ? k : hi;
    }
    *lo_out = lo;
    *hi_out = hi;
}

// The cuts of the wants (sorted by rank) over keys[0 ..< n]; 0, or -2 when out of memory. One
// pass finds the keys' range, one histograms them into up to 2048 buckets of equal width over
// it (about n/8 buckets), one pass (per eight) gathers the keys of every bucket that holds a
// rank, and each such bucket goes on alone; a few keys are sorted.
static int exact_cuts(const uint32_t *keys, int64_t n, const want_t *w, int64_t nw, starkv_topk_cut32 *out, int path) {
    if (nw == 0) return 0;
    if (n <= SMALL_ROW) {
        uint32_t d[SMALL_ROW];
        memcpy(d, keys, (size_t)n * sizeof(uint32_t));
        sort_desc_small(d, n);
        for (int64_t i = 0; i < nw; i++) {
            int64_t r = w[i].rank;
            uint32_t key = d[r - 1];
            int64_t first = r - 1, last = r - 1;
            while (first > 0 && d[first - 1] == key) first--;
            while (last + 1 < n && d[last + 1] == key) last++;
            out[w[i].slot] = (starkv_topk_cut32){key, r - first, last - first + 1};
        }
        return 0;
    }
    uint32_t lo, hi;
    min_max(path, keys, n, &lo, &hi);
    if (lo == hi) {
        for (int64_t i = 0; i < nw; i++) out[w[i].slot] = (starkv_topk_cut32){lo, w[i].rank, n};
        return 0;
    }
    uint32_t span = hi - lo;
    int bits = bit_length64((uint64_t)n) - 3;
    bits = bits < 5 ? 5 : (bits > 11 ? 11 : bits);
    int shift = bit_length64(span) - bits;
    if (shift < 0) shift = 0;
    int64_t buckets = (int64_t)(span >> shift) + 1;
    // Four interleaved histograms: a row's keys crowd into few buckets. Then the wants with
    // their ranks inside their bucket, and the group (bucket) each starts. Small ones live on
    // the stack (the bracket buffers and the buckets below them are small).
    uint32_t hist_local[LOCAL_HIST];
    want_t sub_local[LOCAL_WANTS];
    int64_t group_local[LOCAL_WANTS + 1], group_bucket_local[LOCAL_WANTS];
    int local_hist = 4 * buckets <= LOCAL_HIST, local_wants = nw <= LOCAL_WANTS;
    uint32_t *hist = local_hist ? hist_local : malloc((size_t)(4 * buckets) * sizeof(uint32_t));
    want_t *sub = local_wants ? sub_local : malloc((size_t)nw * sizeof(want_t));
    int64_t *group = local_wants ? group_local : malloc((size_t)(nw + 1) * sizeof(int64_t));
    int64_t *group_bucket = local_wants ? group_bucket_local : malloc((size_t)nw * sizeof(int64_t));
    int rc = 0;
    if (!hist || !sub || !group || !group_bucket) {
        rc = -2;
        goto done;
    }
    memset(hist, 0, (size_t)(4 * buckets) * sizeof(uint32_t));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        hist[(keys[i] - lo) >> shift]++;
        hist[buckets + ((keys[i + 1] - lo) >> shift)]++;
        hist[2 * buckets + ((keys[i + 2] - lo) >> shift)]++;
        hist[3 * buckets + ((keys[i + 3] - lo) >> shift)]++;
    }
    for (; i < n; i++) hist[(keys[i] - lo) >> shift]++;
    for (int64_t b = 0; b < buckets; b++) hist[b] += hist[buckets + b] + hist[2 * buckets + b] + hist[3 * buckets + b];

    // The wants come by rank, so their buckets come from the top down, each group contiguous.
    int64_t bucket = buckets - 1, above = 0, ngroups = 0;
    for (int64_t t = 0; t < nw; t++) {
        while (above + (int64_t)hist[bucket] < w[t].rank) {
            above += hist[bucket];
            bucket--;
        }
        if (ngroups == 0 || group_bucket[ngroups - 1] != bucket) {
            group[ngroups] = t;
            group_bucket[ngroups++] = bucket;
        }
        sub[t] = (want_t){w[t].rank - above, w[t].slot};
    }
    group[ngroups] = nw;

    for (int64_t g0 = 0; g0 < ngroups && rc == 0; g0 += MAX_BRACKETS) {
        int nb = (int)(ngroups - g0 < MAX_BRACKETS ? ngroups - g0 : MAX_BRACKETS);
        bracket_t br[MAX_BRACKETS];
        int64_t total = 0;
        for (int j = 0; j < nb; j++) {
            uint64_t first = (uint64_t)lo + ((uint64_t)group_bucket[g0 + j] << shift);
            uint64_t last = first + (((uint64_t)1 << shift) - 1);
            uint32_t top = (uint32_t)(last < hi ? last : hi);
            // The whole bucket is copied (it is narrower than 2^27 keys, so limit cannot wrap).
            br[j] = (bracket_t){.lo = (uint32_t)first, .hi = top, .base = (uint32_t)first,
                                .limit = top - (uint32_t)first + 1, .cap = hist[group_bucket[g0 + j]]};
            total += br[j].cap + 16;
        }
        uint32_t space_local[LOCAL_SPACE];
        uint32_t *space = total <= LOCAL_SPACE ? space_local : malloc((size_t)total * sizeof(uint32_t));
        if (!space) {
            rc = -2;
            break;
        }
        total = 0;
        for (int j = 0; j < nb; j++) {
            br[j].buf = space + total;
            total += br[j].cap + 16;
        }
        run_pass(path, keys, n, br, nb);
        for (int j = 0; j < nb && rc == 0; j++) {
            int64_t g = g0 + j;
            rc = exact_cuts(br[j].buf, br[j].count, sub + group[g], group[g + 1] - group[g], out, path);
        }
        if (space != space_local) free(space);
    }
done:
    if (!local_hist) free(hist);
    if (!local_wants) {
        free(sub);
        free(group);
        free(group_bucket);
    }
    return rc;
}

int starkv_topk_paths(void) {
    int paths = 1 << STARKV_TOPK_SCALAR;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2")) paths |= 1 << STARKV_TOPK_AVX2;
    if (__builtin_cpu_supports("avx512f")) paths |= 1 << STARKV_TOPK_AVX512;
#endif
    return paths;
}

static int best_pass(int paths) {
    return (paths & (1 << STARKV_TOPK_AVX512))  ? STARKV_TOPK_AVX512
           : (paths & (1 << STARKV_TOPK_AVX2)) ? STARKV_TOPK_AVX2
                                                : STARKV_TOPK_SCALAR;
}

// ---- Entry --------------------------------------------------------------------------------

// The sampled select of the wants (sorted by rank, nw ≤ MAX_BRACKETS, n ≥ SAMPLED_MIN_ROW).
// Wants its brackets missed are moved to missed[0 ..< *nmissed].
// The bracket copies' buffer, one per thread, kept between calls and grown to the largest
// request (a sweep selects ~10^5 rows; a fresh block per call went through the allocator's shared
// arena, and its lock, every time). Freed when the thread ends.
static pthread_key_t space_key;
static pthread_once_t space_once = PTHREAD_ONCE_INIT;
typedef struct { uint32_t *data; size_t capacity; } space_t;
static void space_free(void *p) {
    space_t *sp = p;
    free(sp->data);
    free(sp);
}
static void space_init(void) { (void)pthread_key_create(&space_key, space_free); }
static uint32_t *bracket_space(size_t count) {
    (void)pthread_once(&space_once, space_init);
    space_t *sp = pthread_getspecific(space_key);
    if (!sp) {
        sp = calloc(1, sizeof(space_t));
        if (!sp) return NULL;
        if (pthread_setspecific(space_key, sp) != 0) {
            free(sp);
            return NULL;
        }
    }
    if (sp->capacity < count) {
        free(sp->data);
        sp->data = malloc(count * sizeof(uint32_t));
        sp->capacity = sp->data ? count : 0;
    }
    return sp->data;
}

static int sampled_cuts(const uint32_t *keys, int64_t n, const want_t *w, int64_t nw, starkv_topk_cut32 *out,
                        int path, want_t *missed, int64_t *nmissed) {
    *nmissed = 0;
    // The sample: s keys at a fixed stride, from the middle of each stride.
    int64_t s = n / SAMPLE_DIV;
    s = s < 64 ? 64 : (s > SAMPLE_MAX ? SAMPLE_MAX : s);
    int64_t stride = n / s;
    uint32_t sample[SAMPLE_MAX];
    for (int64_t i = 0; i < s; i++) sample[i] = keys[i * stride + stride / 2];

    // One bracket per want: sample indices [top, bottom] counted from the top, around
    // a = k·s/n, ± d ≈ SIGMA standard deviations (variance s·q·(1 − q), q = k/n), at least 3.
    int64_t top[MAX_BRACKETS], bottom[MAX_BRACKETS];
    for (int64_t t = 0; t < nw; t++) {
        int64_t k = w[t].rank;
        int64_t a = (int64_t)(((__int128)k * s) / n);
        uint64_t var = (uint64_t)(((__int128)k * (n - k) * s) / ((__int128)n * n));
        int64_t d = (int64_t)(SIGMA * isqrt64(var) + 3);
        top[t] = a - d;
        bottom[t] = a + d;
    }
    // Widened to be monotone in the rank (d is not), so that the key brackets come from the
    // largest keys down and merging neighbours keeps them disjoint.
    for (int64_t t = nw - 1; t > 0; t--)
        if (top[t - 1] > top[t]) top[t - 1] = top[t];
    for (int64_t t = 1; t < nw; t++)
        if (bottom[t] < bottom[t - 1]) bottom[t] = bottom[t - 1];
    // The sample keys at those indices: the exact select of the sample (rank = index + 1).
    want_t ends[2 * MAX_BRACKETS];
    starkv_topk_cut32 end_cut[2 * MAX_BRACKETS];
    int64_t nends = 0;
    for (int64_t t = 0; t < nw; t++) {
        if (top[t] >= 0) ends[nends++] = (want_t){top[t] + 1, 2 * t};
        if (bottom[t] < s) ends[nends++] = (want_t){bottom[t] + 1, 2 * t + 1};
    }
    sort_wants(ends, nends);
    if (exact_cuts(sample, s, ends, nends, end_cut, path) != 0) return -2;

    bracket_t br[MAX_BRACKETS];
    int64_t first_want[MAX_BRACKETS + 1], span_top[MAX_BRACKETS], span_bottom[MAX_BRACKETS];
    int nb = 0;
    for (int64_t t = 0; t < nw; t++) {
        uint32_t hi = top[t] < 0 ? UINT32_MAX : end_cut[2 * t].key;
        uint32_t lo = bottom[t] >= s ? 0 : end_cut[2 * t + 1].key;
        if (nb > 0 && hi >= br[nb - 1].lo) {
            br[nb - 1].lo = lo;  // overlaps the previous (higher) bracket: merged
            span_bottom[nb - 1] = t;
        } else {
            br[nb] = (bracket_t){.lo = lo, .hi = hi};
            first_want[nb] = t;
            span_top[nb] = span_bottom[nb] = t;
            nb++;
        }
    }
    first_want[nb] = nw;

    // Each bracket copies its keys, except that an end which the sample shows tied (a row's
    // many ties) is counted apart: such a tie group then fills the bracket or sits at its end.
    // Buffers: the sample's keys in its index range, scaled to the row, with room to spare; a
    // bracket that outgrows its buffer misses its ranks.
    int64_t total = 0;
    for (int j = 0; j < nb; j++) {
        int64_t th = first_want[j], tl = span_bottom[j];
        uint32_t lo = br[j].lo, hi = br[j].hi;
        br[j].split_hi = lo == hi || (top[th] >= 0 && end_cut[2 * th].equal > 1) || (lo == 0 && hi == UINT32_MAX);
        br[j].split_lo = lo != hi && bottom[tl] < s && end_cut[2 * tl + 1].equal > 1;
        uint32_t first = lo + (uint32_t)br[j].split_lo, last = hi - (uint32_t)br[j].split_hi;
        br[j].base = first;
        br[j].limit = lo == hi || last < first ? 0 : last - first + 1;
        int64_t t0 = span_top[j], t1 = span_bottom[j];
        int64_t from = top[t0] < 0 ? 0 : top[t0], to = bottom[t1] >= s ? s - 1 : bottom[t1];
        int64_t cap = 2 * (to - from + 3) * stride + 256;
        br[j].cap = cap < n ? cap : n;
        total += br[j].cap + 16;
    }
    uint32_t *space = bracket_space((size_t)total);
    if (!space) return -2;
    total = 0;
    for (int j = 0; j < nb; j++) {
        br[j].buf = space + total;
        total += br[j].cap + 16;
    }

    run_pass(path, keys, n, br, nb);

    // A rank r places below the bracket's `above` keys: first among the keys equal to hi when
    // they are apart, then among the copied keys, then among those equal to lo when apart.
    int rc = 0;
    want_t sub[MAX_BRACKETS];
    for (int j = 0; j < nb && rc == 0; j++) {
        int64_t m = 0;
        int fits = br[j].count <= br[j].cap;
        int64_t eq_hi = br[j].split_hi ? br[j].eq_hi : 0, eq_lo = br[j].split_lo ? br[j].eq_lo : 0;
        for (int64_t t = first_want[j]; t < first_want[j + 1]; t++) {
            int64_t r = w[t].rank - br[j].above;
            if (r >= 1 && r <= eq_hi) {
                out[w[t].slot] = (starkv_topk_cut32){br[j].hi, r, eq_hi};
            } else if (fits && r > eq_hi && r <= eq_hi + br[j].count) {
                sub[m++] = (want_t){r - eq_hi, w[t].slot};
            } else if (r > eq_hi + br[j].count && r <= eq_hi + br[j].count + eq_lo) {
                out[w[t].slot] = (starkv_topk_cut32){br[j].lo, r - eq_hi - br[j].count, eq_lo};
            } else {
                missed[(*nmissed)++] = w[t];
            }
        }
        if (m > 0) rc = exact_cuts(br[j].buf, br[j].count, sub, m, out, path);
    }
    return rc;
}

int starkv_topk_cuts_u32_using(const uint32_t *keys, int64_t n, const int64_t *ranks, int64_t count,
                               starkv_topk_cut32 *out, int path) {
    if (count < 0 || n < 0) return -1;
    for (int64_t i = 0; i < count; i++)
        if (ranks[i] < 1 || ranks[i] > n) return -1;
    if (count == 0) return 0;
    int paths = starkv_topk_paths();
    int no_sample = (path & STARKV_TOPK_NO_SAMPLE) != 0;
    path &= ~STARKV_TOPK_NO_SAMPLE;
    if (path == STARKV_TOPK_AUTO) {
        path = best_pass(paths);
    } else if (path < 0 || path > STARKV_TOPK_AVX512 || !(paths & (1 << path))) {
        return -3;
    }
    want_t *w = malloc((size_t)count * 2 * sizeof(want_t));
    if (!w) return -2;
    for (int64_t i = 0; i < count; i++) w[i] = (want_t){ranks[i], i};
    sort_wants(w, count);
    int rc;
    if (no_sample || n < SAMPLED_MIN_ROW || count > MAX_BRACKETS) {
        rc = exact_cuts(keys, n, w, count, out, path);
    } else {
        want_t *missed = w + count;
        int64_t nmissed = 0;
        rc = sampled_cuts(keys, n, w, count, out, path, missed, &nmissed);
        if (rc == 0 && nmissed > 0) rc = exact_cuts(keys, n, missed, nmissed, out, path) == 0 ? 1 : -2;
    }
    free(w);
    return rc;
}

int starkv_topk_cuts_u32(const uint32_t *keys, int64_t n, const int64_t *ranks, int64_t count, starkv_topk_cut32 *out) {
    return starkv_topk_cuts_u32_using(keys, n, ranks, count, out, STARKV_TOPK_AUTO);
}
