"""Replay benchmark (benchmarks/replay/README.md).

On one trace (by default the 7B 1920x1080 10-step trajectory of `make traces-full`) it measures,
single-threaded, best of --repeats passes:

  swift replay    `starkv replay TRACE --policies P --budgets 20 --threads 1` per policy, wall
                  clock of the whole command (reading, scoring, memory/FLOP simulation, quality
                  proxy, digest, report files);
  swift read      `starkv bench-read`: decompressing the fields a replay reads, nothing else;
  swift scoring   `starkv bench-read --policy P`: reading + the policy's scoring only;
  numpy           benchmarks/replay/numpy_scoring.py: SnapKV and STaR-KV on the same fields,
                  read through the Python trace reader (starkv_recorder.format), timed as
                  reading and scoring apart;
and checks that the NumPy kept sets equal the Swift ones (`--dump-kept`) on this trace, so the
ratios compare the same computation. Prints a Markdown table; --json writes every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy_scoring as ns  # noqa: E402
from starkv_recorder.format import TraceReader  # noqa: E402

POLICIES = ["full", "streamingllm", "h2o", "snapkv", "snapkv-kvpress", "pyramidkv", "adakv", "vlcache",
            "guikv", "starkv"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"benchmark: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def swift_replay_seconds(binary: str, trace: str, policy: str, budget: int, repeats: int, out: str) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run([binary, "replay", trace, "--policies", policy, "--budgets", str(budget), "--threads", "1",
             "--quiet", "--force", "--out", out])
        best = min(best, time.perf_counter() - t0)
    return best


def swift_bench_read(binary: str, trace: str, repeats: int, policy: str | None = None, budget: int = 20,
                     fields: str | None = None) -> dict:
    cmd = [binary, "bench-read", trace, "--json", "--repeats", str(repeats)]
    if policy:
        cmd += ["--policy", policy, "--budget", str(budget)]
    if fields:
        cmd += ["--fields", fields]
    return json.loads(run(cmd).stdout)


def numpy_pass(trace: str, policy: str, budget: int) -> tuple[float, float, float, dict]:
    """(open seconds, read seconds, scoring seconds, kept sets by (step, layer)) of one pass."""
    t0 = time.perf_counter()
    reader = TraceReader(trace)
    opened = time.perf_counter() - t0
    fields = ["win_sum"] + (["hid_norm"] if policy == "starkv" else [])
    layers = reader.header.model.num_layers
    read = scoring = 0.0
    arrays: dict = {}

    def fetch(pos, field, layer):
        return arrays[(field, layer)]

    kept: dict = {}
    layer_results = ns.replay_trace(reader, policy, budget, fetch=fetch)
    # Decode a whole step, then score it: reading and scoring are timed apart.
    for pos in range(len(reader.steps)):
        a = time.perf_counter()
        arrays = {(f, l): reader.tensor(pos, f, l) for l in range(layers) for f in fields}
        b = time.perf_counter()
        read += b - a
        for _ in range(layers):
            p, layer, rows = next(layer_results)
            assert p == pos
            kept[(reader.steps[pos].record.step_index, layer)] = [r.astype(np.int32) for r in rows]
        scoring += time.perf_counter() - b
    return opened, read, scoring, kept


def agreement(binary: str, trace: str, policy: str, budget: int, kept: dict, tmp: str) -> tuple[int, int, float]:
    """(identical layers, layers, worst overlap) of NumPy vs `starkv replay --dump-kept`."""
    dump = os.path.join(tmp, f"kept-{policy}.jsonl")
    run([binary, "replay", trace, "--policies", policy, "--budgets", str(budget), "--threads", "1", "--quiet",
         "--force", "--out", os.path.join(tmp, "agree"), "--dump-kept", dump])
    same = total = 0
    worst = 1.0
    with open(dump) as f:
        for line in f:
            r = json.loads(line)
            mine = kept[(r["step"], r["layer"])]
            theirs = r["kept"]
            total += 1
            if len(mine) == len(theirs) and all(np.array_equal(m, t) for m, t in zip(mine, theirs)):
                same += 1
            else:
                for m, t in zip(mine, theirs):
                    worst = min(worst, len(np.intersect1d(m, t)) / max(1, len(t)))
    os.remove(dump)
    return same, total, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".build/release/starkv")
    ap.add_argument("--trace", default="traces/generated/qwen2.5-vl-7b-1920x1080-10step.starkv")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default=",".join(POLICIES), help="policies timed with `starkv replay`")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()
    if not os.path.isfile(a.trace):
        sys.exit(f"benchmark: {a.trace} not found; run `make traces-full` first")
    steps = len(TraceReader(a.trace).steps)
    res: dict = {"trace": a.trace, "steps": steps, "budget": a.budget, "repeats": a.repeats,
                 "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "python": platform.python_version(), "numpy": np.__version__}}
    with tempfile.TemporaryDirectory() as tmp:
        res["swift_read"] = swift_bench_read(a.bin, a.trace, a.repeats)
        res["swift_replay"] = {}
        for p in a.policies.split(","):
            sec = swift_replay_seconds(a.bin, a.trace, p, a.budget, a.repeats, os.path.join(tmp, "r"))
            res["swift_replay"][p] = {"seconds": sec, "steps_per_second": steps / sec}
            print(f"  swift replay {p}: {sec:.2f} s", file=sys.stderr)
        res["numpy"] = {}
        for p in ("snapkv", "starkv"):
            res[f"swift_scoring_{p}"] = swift_bench_read(a.bin, a.trace, a.repeats, policy=p, budget=a.budget)
            best = None
            for _ in range(a.repeats):
                opened, read, scoring, kept = numpy_pass(a.trace, p, a.budget)
                if best is None or read + scoring < best[1] + best[2]:
                    best = (opened, read, scoring)
            same, total, worst = agreement(a.bin, a.trace, p, a.budget, kept, tmp)
            res["numpy"][p] = {"open_seconds": best[0], "read_seconds": best[1], "scoring_seconds": best[2],
                               "identical_layers": same, "layers": total, "worst_overlap": worst}
            print(f"  numpy {p}: read {best[1]:.2f} s, scoring {best[2]:.2f} s; {same}/{total} layers identical",
                  file=sys.stderr)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    print(render(res))


def render(res: dict) -> str:
    n = res["steps"]
    rd = res["swift_read"]
    lines = [f"trace {res['trace']}: {n} steps, budget {res['budget']}%, best of {res['repeats']}, one thread",
             "",
             "| what | seconds | steps/s |",
             "|---|---:|---:|",
             f"| swift decompression only ({', '.join(rd['fields'])}) | {rd['seconds']:.2f} | {n / rd['seconds']:.2f} |"]
    for p, r in res["swift_replay"].items():
        lines.append(f"| swift `starkv replay` {p} (end to end) | {r['seconds']:.2f} | {r['steps_per_second']:.2f} |")
    lines += ["", "| scoring on the same fields | swift read | swift scoring | numpy read | numpy scoring | "
              "scoring ratio | read+scoring ratio | swift replay vs numpy read+scoring | kept sets identical |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p, r in res["numpy"].items():
        s = res[f"swift_scoring_{p}"]
        replay = res["swift_replay"].get(p, {}).get("seconds")
        e2e = f"{(r['read_seconds'] + r['scoring_seconds']) / replay:.2f}x" if replay else "-"
        lines.append(
            f"| {p} | {s['readSeconds']:.2f} s | {s['scoringSeconds']:.2f} s | {r['read_seconds']:.2f} s | "
            f"{r['scoring_seconds']:.2f} s | {r['scoring_seconds'] / s['scoringSeconds']:.2f}x | "
            f"{(r['read_seconds'] + r['scoring_seconds']) / s['seconds']:.2f}x | {e2e} | "
            f"{r['identical_layers']}/{r['layers']} |")
    lines.append("")
    lines.append("ratio = NumPy seconds / Swift seconds (above 1: Swift is faster). NumPy's trace open "
                 "(whole-file read and CRC check, not counted above): "
                 + ", ".join(f"{p} {r['open_seconds']:.2f} s" for p, r in res["numpy"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
