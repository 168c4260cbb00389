#!/usr/bin/env bash
# Replay benchmark: swift replay / decompression / scoring vs NumPy on the 7B 1920x1080 10-step
# trajectory. Usage: benchmarks/replay/run.sh [STARKV_BIN] [PYTHON]  (make bench passes both).
# Figures and the machine they were measured on: benchmarks/replay/README.md.
set -euo pipefail
BIN=${1:-.build/release/starkv}
PY=${2:-.venv/bin/python}
TRACE=traces/generated/qwen2.5-vl-7b-1920x1080-10step.starkv
[ -f "$TRACE" ] || make traces-full
mkdir -p out/bench
"$PY" benchmarks/replay/bench_replay.py --bin "$BIN" --trace "$TRACE" --budget 20 --repeats 3 \
  --json out/bench/replay.json
# Issue 15's sweep targets: 55-pair sweep with 1 and 2 threads vs the decompression floor, plain
# zstd, a NumPy lower bound and peak RSS (README "Sweep").
"$PY" benchmarks/replay/bench_sweep.py --bin "$BIN" --trace "$TRACE" --repeats 3 --json out/bench/sweep.json
