#ifndef STARKV_SUPPORT_H
#define STARKV_SUPPORT_H
#include <stddef.h>
#include <stdint.h>
#include "starkv_sha256.h"

/// CRC32C (Castagnoli, reflected 0x82F63B78). `crc` is the running value: pass 0 for a new
/// checksum and the previous result to continue. Uses SSE4.2 where the CPU has it.
uint32_t starkv_crc32c(uint32_t crc, const void *data, size_t length);

/// Byte-plane shuffle of `count` elements of `width` bytes: out[p*count + i] = in[i*width + p].
void starkv_shuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width);
/// Inverse of starkv_shuffle.
void starkv_unshuffle(const uint8_t *in, uint8_t *out, size_t count, size_t width);
#endif
