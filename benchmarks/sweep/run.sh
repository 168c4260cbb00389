#!/usr/bin/env bash
# Sweep throughput (units per second): one sweep of 4 synthetic traces x 4 GPUs = 16 units, each
# all 10 policies x 2 budgets, run (a) in one process with `starkv sweep run` and (b) on a local Ray
# cluster with 1 and 2 worker CPUs (python -m starkv.sweep; one unit per task, 1 thread each).
# Ray start-up is not counted; the merge is. Usage: benchmarks/sweep/run.sh [STARKV_BIN] [PYTHON]
set -euo pipefail
BIN=$(realpath "${1:-.build/release/starkv}")
PY=${2:-.venv/bin/python}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/starkv-sweep-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/traces"
for seed in 1 2 3 4; do
  "$BIN" record synth --out "$WORK/traces/t$seed.starkv" --model tiny-vl --screen 1280x720 --steps 6 \
    --image-slots 2 --fields standard --seed "$seed" --quiet >/dev/null
done
cat > "$WORK/sweep.toml" <<'TOML'
starkv_sweep = 1
traces = ["traces/*.starkv"]
policies = ["all"]
budgets = [10, 40]
gpus = ["h100-80gb", "a100-80gb", "h200", "h100-pcie-80gb"]
threads = 1
TOML
"$BIN" sweep plan "$WORK/sweep.toml" | tail -1
start=$(date +%s.%N)
"$BIN" sweep run "$WORK/sweep.toml" --out "$WORK/single" --threads 1 --quiet >/dev/null
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'single process, 1 thread: 16 units in {s:.2f} s = {16/s:.2f} units/s')" "$start" "$end"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for cpus in 1 2; do
  STARKV_BIN="$BIN" PYTHONPATH="$ROOT/python" "$PY" - "$WORK" "$cpus" <<'PY'
import os, subprocess, sys
from starkv.sweep import run_sweep
work, cpus = sys.argv[1], int(sys.argv[2])
r = run_sweep(os.path.join(work, "sweep.toml"), os.path.join(work, f"ray{cpus}"), num_cpus=cpus, progress=False)
same = subprocess.run(["diff", "-r", os.path.join(work, "single"), r.out], capture_output=True).returncode == 0
print(f"Ray, {cpus} worker CPU(s): {r.units} units in {r.seconds:.2f} s = {r.units_per_second:.2f} units/s; "
      f"merged output identical to the single-process run: {same}")
PY
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
