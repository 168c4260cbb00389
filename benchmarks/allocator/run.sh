#!/usr/bin/env bash
# Allocator replay throughput: replays the caching-allocator event script of a 7B agent trajectory
# (1920x1080, 1..5 screenshots, eager attention, 64 generated tokens per step; 71,267 events)
# through StarKVMemory.CachingAllocator, default and expandable segments, best of 5.
set -euo pipefail
BIN="${1:-.build/release/starkv}"
"$BIN" memory --bench
