#include "starkv_support.h"

static uint32_t crc_table[8][256];
static int crc_table_ready = 0;

static void crc_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
    crc_table_ready = 1;
}

static uint32_t crc_software(uint32_t crc, const uint8_t *p, size_t n) {
    if (!crc_table_ready) crc_init_table();
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
        lo ^= crc;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
              crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
              crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>
#include <string.h>
__attribute__((target("sse4.2")))
static uint32_t crc_hardware(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

uint32_t starkv_crc32c(uint32_t crc, const void *data, size_t length) {
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc_hardware(crc, p, length);
#endif
    return ~crc_software(crc, p, length);
}

void starkv_shuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width) {
    for (size_t p = 0; p < width; p++) {
        uint8_t *dst = out + p * count;
        const uint8_t *src = in + p;
        for (size_t i = 0; i < count; i++) dst[i] = src[i * width];
    }
}

void starkv_unshuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width) {
    for (size_t p = 0; p < width; p++) {
        const uint8_t *src = in + p * count;
        uint8_t *dst = out + p;
        for (size_t i = 0; i < count; i++) dst[i * width] = src[i];
    }
}

void starkv_unshuffle_range(const uint8_t *in, size_t n, size_t start, uint8_t *out, size_t count, size_t width) {
    if (count == 0 || n == 0) return;
    size_t p = start / count, i = start % count;
    while (n > 0) {
        size_t run = count - i < n ? count - i : n;
        uint8_t *dst = out + i * width + p;
        switch (width) { /* constant strides let the compiler unroll the common widths */
        case 2: for (size_t k = 0; k < run; k++) dst[2 * k] = in[k]; break;
        case 4: for (size_t k = 0; k < run; k++) dst[4 * k] = in[k]; break;
        case 8: for (size_t k = 0; k < run; k++) dst[8 * k] = in[k]; break;
        default: for (size_t k = 0; k < run; k++) dst[k * width] = in[k]; break;
        }
        in += run;
        n -= run;
        i += run;
        if (i == count) {
            i = 0;
            p++;
        }
    }
}

long starkv_first_nonfinite(const uint8_t *data, size_t count, int kind) {
    for (size_t i = 0; i < count; i++) {
        switch (kind) {
        case 2: { /* binary16: exponent all ones */
            uint16_t v = (uint16_t)(data[2 * i] | (data[2 * i + 1] << 8));
            if ((v & 0x7C00u) == 0x7C00u) return (long)i;
            break;
        }
        case 3: { /* bfloat16 */
            uint16_t v = (uint16_t)(data[2 * i] | (data[2 * i + 1] << 8));
            if ((v & 0x7F80u) == 0x7F80u) return (long)i;
            break;
        }
        case 4: { /* binary32 */
            uint32_t v = (uint32_t)data[4 * i] | ((uint32_t)data[4 * i + 1] << 8) | ((uint32_t)data[4 * i + 2] << 16) |
                         ((uint32_t)data[4 * i + 3] << 24);
            if ((v & 0x7F800000u) == 0x7F800000u) return (long)i;
            break;
        }
        case 8: { /* binary64: the high word's exponent */
            uint32_t hi = (uint32_t)data[8 * i + 4] | ((uint32_t)data[8 * i + 5] << 8) | ((uint32_t)data[8 * i + 6] << 16) |
                          ((uint32_t)data[8 * i + 7] << 24);
            if ((hi & 0x7FF00000u) == 0x7FF00000u) return (long)i;
            break;
        }
        default: return -1;
        }
    }
    return -1;
}
