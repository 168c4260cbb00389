#ifndef STARKV_SHA256_H
#define STARKV_SHA256_H
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has the x86 SHA extensions (SHA-NI) with SSSE3 and SSE4.1, else 0.
int starkv_sha256_hw_available(void);

/// Compresses `blocks` 64-byte blocks at `data` into the eight-word SHA-256 `state` (FIPS 180-4
/// §6.2.2) with the SHA-NI instructions. Call only when starkv_sha256_hw_available() is 1.
void starkv_sha256_hw_compress(uint32_t state[8], const uint8_t *data, size_t blocks);

#endif
