"""Sweep benchmark (benchmarks/replay/README.md, "Sweep"): issue 15's targets in one run.

On the 7B 1920x1080 10-step trajectory (`make traces-full`) it measures, whole process, runs
interleaved (t1, t2, floor, t1, t2, floor, ...), median of --repeats:

  sweep t1 / t2   `starkv replay TRACE --policies all --budgets 10,20,40,60,80,100 --threads N`
                  (55 pairs): wall, CPU (user+sys of the child) and peak RSS (ru_maxrss);
  floor           `starkv bench-read TRACE --fields <every field the sweep reads> --repeats 1`:
                  CRC32C + zstd + byte un-shuffle of those chunks, CPU seconds of the process
                  (which includes the trace open);
  plain zstd      python-zstandard decompressing the same stored chunk frames with one reused
                  context (no CRC, no un-shuffle): the physical floor of reading (CPU seconds,
                  best of --repeats);
  numpy           benchmarks/replay/numpy_scoring.py over the same trace: the fields read once
                  per step (Python reader: zstd + NumPy un-shuffle), then SnapKV and STaR-KV
                  at every budget of the sweep, state carried. NumPy implements 2 of the 10
                  policies, so its time is a LOWER BOUND on a NumPy sweep of all 10.

The machine is shared: CPU time (user+sys) is the figure compared where load matters; wall
time is reported with the load average seen before and after. Prints a Markdown table and the
ratios against the issue's targets; --json writes every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy_scoring as ns  # noqa: E402
from starkv_recorder.format import TraceReader  # noqa: E402

BUDGETS = [10, 20, 40, 60, 80, 100]
# Every field `starkv replay --policies all` reads on a `standard` trace (policies' required
# fields plus the quality proxy's decode_attn_sum).
SWEEP_FIELDS = ["win_sum", "hid_norm", "guikv_resid", "colsum_all", "colsum_postvis", "count_gt_001", "n_valid",
                "decode_attn_sum"]


def run_reaped(cmd: list[str]) -> dict:
    """Runs `cmd` under /usr/bin/time: wall seconds, CPU seconds (user+sys) and peak RSS of that
    process alone. (Not os.wait4 from here: Linux carries the forking parent's resident size
    into the child's ru_maxrss across exec, and this process holds the trace.)"""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name] + cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"benchmark: {' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        user, sys_, rss_kb = tf.read().split()[-3:]
    return {"wall": wall, "cpu": float(user) + float(sys_), "user": float(user), "sys": float(sys_),
            "max_rss_bytes": int(rss_kb) * 1024, "stdout": p.stdout}


def plain_zstd(reader: TraceReader, fields: set[str], repeats: int) -> dict:
    """CPU seconds to decompress the stored zstd frames of `fields` (one reused context)."""
    frames = []
    raw = 0
    data = reader._data  # the stored bytes of the whole file (read once by the reader)
    for entry in reader.steps:
        for desc, coff in zip(entry.record.chunks, entry.chunk_offsets):
            if desc.field in fields:
                frames.append((memoryview(data)[coff:coff + desc.stored_bytes], desc.raw_bytes, desc.codec))
                raw += desc.raw_bytes
    dctx = zstandard.ZstdDecompressor()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for f, n, codec in frames:
            if codec != 0:
                dctx.decompress(f, max_output_size=n)
        best = min(best, time.process_time() - t0)
    return {"cpu": best, "raw_bytes": raw, "stored_bytes": sum(len(f) for f, _, _ in frames), "chunks": len(frames),
            "raw_mb_per_cpu_s": raw / 1e6 / best, "zstd": zstandard.__version__}


def largest_step_bytes(reader: TraceReader, fields: set[str]) -> int:
    return max(sum(d.raw_bytes for d in e.record.chunks if d.field in fields) for e in reader.steps)


def numpy_sweep(trace: str) -> dict:
    """One NumPy pass: fields read once per step, SnapKV and STaR-KV at every budget."""
    reader = TraceReader(trace)
    layers = reader.header.model.num_layers
    arrays: dict = {}

    def fetch(pos, field, layer):
        return arrays[(field, layer)]

    gens = [ns.replay_trace(reader, p, b, fetch=fetch) for p in ("snapkv", "starkv") for b in BUDGETS]
    read = scoring = 0.0
    for pos in range(len(reader.steps)):
        a = time.process_time()
        arrays = {(f, l): reader.tensor(pos, f, l) for l in range(layers) for f in ("win_sum", "hid_norm")}
        b = time.process_time()
        read += b - a
        for g in gens:
            for _ in range(layers):
                p, _, _ = next(g)
                assert p == pos
        scoring += time.process_time() - b
    return {"read_cpu": read, "scoring_cpu": scoring, "cpu": read + scoring, "pairs": len(gens)}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".build/release/starkv")
    ap.add_argument("--trace", default="traces/generated/qwen2.5-vl-7b-1920x1080-10step.starkv")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numpy-repeats", type=int, default=1)
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()
    if not os.path.isfile(a.trace):
        sys.exit(f"benchmark: {a.trace} not found; run `make traces-full` first")
    reader = TraceReader(a.trace)
    fields = [f for f in SWEEP_FIELDS if f in reader.header.fields]
    if "win_rows" in reader.header.fields:
        fields.append("win_rows")
    res: dict = {"trace": a.trace, "steps": len(reader.steps), "budgets": BUDGETS, "fields": fields,
                 "repeats": a.repeats, "load_before": loadavg(),
                 "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "python": platform.python_version(), "numpy": np.__version__}}
    res["largest_step_decoded_bytes"] = largest_step_bytes(reader, set(fields))
    res["plain_zstd"] = plain_zstd(reader, set(fields), a.repeats)
    del reader
    budgets = ",".join(map(str, BUDGETS))
    runs: dict = {"t1": [], "t2": [], "floor": [], "np_subset": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for name, threads in (("t1", 1), ("t2", 2)):
                runs[name].append(run_reaped([a.bin, "replay", a.trace, "--policies", "all", "--budgets", budgets,
                                              "--threads", str(threads), "--quiet", "--force", "--out", os.path.join(tmp, name)]))
                print(f"  sweep --threads {threads} #{r + 1}: wall {runs[name][-1]['wall']:.1f} s, "
                      f"cpu {runs[name][-1]['cpu']:.1f} s, load {loadavg()}", file=sys.stderr)
            runs["np_subset"].append(run_reaped([a.bin, "replay", a.trace, "--policies", "snapkv,starkv", "--budgets", budgets,
                                                 "--threads", "1", "--quiet", "--force", "--out", os.path.join(tmp, "np")]))
            fl = run_reaped([a.bin, "bench-read", a.trace, "--json", "--repeats", "1", "--fields", ",".join(fields)])
            fl["bench"] = json.loads(fl.pop("stdout"))
            runs["floor"].append(fl)
            print(f"  floor #{r + 1}: cpu {fl['cpu']:.2f} s, load {loadavg()}", file=sys.stderr)
        with open(os.path.join(tmp, "t1", "results.json")) as f1, open(os.path.join(tmp, "t2", "results.json")) as f2:
            res["t1_t2_results_identical"] = f1.read() == f2.read()
    for k in runs:
        for x in runs[k]:
            x.pop("stdout", None)
    res["runs"] = runs
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "cpu", "max_rss_bytes")} for k, v in runs.items()}
    res["median"] = med
    res["floor_raw_bytes"] = runs["floor"][0]["bench"]["rawBytes"]
    nps = [numpy_sweep(a.trace) for _ in range(a.numpy_repeats)]
    res["numpy"] = min(nps, key=lambda x: x["cpu"])
    res["load_after"] = loadavg()
    z = res["plain_zstd"]
    floor_mbps = res["floor_raw_bytes"] / 1e6 / med["floor"]["cpu"]
    res["ratios"] = {
        "sweep_cpu_over_floor_cpu": med["t1"]["cpu"] / med["floor"]["cpu"],
        "t1_wall_over_t2_wall": med["t1"]["wall"] / med["t2"]["wall"],
        "floor_mbps_over_plain_zstd_mbps": floor_mbps / z["raw_mb_per_cpu_s"],
        "numpy_lower_bound_cpu_over_sweep_cpu": res["numpy"]["cpu"] / med["t1"]["cpu"],
        "numpy_cpu_over_same_pairs_cpu": res["numpy"]["cpu"] / med["np_subset"]["cpu"],
        "peak_rss_over_largest_step": max(med["t1"]["max_rss_bytes"], med["t2"]["max_rss_bytes"])
        / res["largest_step_decoded_bytes"],
    }
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    print(render(res, floor_mbps))


def render(res: dict, floor_mbps: float) -> str:
    m, z, r, n = res["median"], res["plain_zstd"], res["ratios"], res["numpy"]
    mb = 1 / 1e6
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    lines = [
        f"trace {res['trace']}: {res['steps']} steps; sweep = --policies all --budgets "
        f"{','.join(map(str, res['budgets']))} (55 pairs); median of {res['repeats']} interleaved runs; "
        f"load average {res['load_before']} before, {res['load_after']} after ({res['machine']['cores']} cores)",
        "",
        "| what | wall s | CPU s (user+sys) | peak RSS MB |",
        "|---|---:|---:|---:|",
        f"| sweep --threads 1 | {m['t1']['wall']:.1f} | {m['t1']['cpu']:.1f} | {m['t1']['max_rss_bytes'] * mb:.0f} |",
        f"| sweep --threads 2 | {m['t2']['wall']:.1f} | {m['t2']['cpu']:.1f} | {m['t2']['max_rss_bytes'] * mb:.0f} |",
        f"| floor: bench-read of {','.join(res['fields'])} | {m['floor']['wall']:.2f} | {m['floor']['cpu']:.2f} | "
        f"{m['floor']['max_rss_bytes'] * mb:.0f} |",
        f"| plain zstd (python-zstandard {z['zstd']}), same {z['chunks']} frames | - | {z['cpu']:.2f} | - |",
        f"| sweep of the pairs NumPy implements (snapkv,starkv x {len(res['budgets'])} budgets), --threads 1 | "
        f"{m['np_subset']['wall']:.1f} | {m['np_subset']['cpu']:.1f} | {m['np_subset']['max_rss_bytes'] * mb:.0f} |",
        f"| NumPy snapkv+starkv x {len(res['budgets'])} budgets (lower bound of a 10-policy sweep) | - | "
        f"{n['cpu']:.1f} (read {n['read_cpu']:.1f}, scoring {n['scoring_cpu']:.1f}) | - |",
        "",
        f"floor {floor_mbps:.0f} MB/CPU-s raw vs plain zstd {z['raw_mb_per_cpu_s']:.0f} MB/CPU-s "
        f"({res['floor_raw_bytes'] * mb:.0f} MB raw, {z['stored_bytes'] * mb:.0f} MB stored); largest step's decoded "
        f"fields {res['largest_step_decoded_bytes'] * mb:.0f} MB; --threads 1 and 2 results.json identical: "
        f"{res['t1_t2_results_identical']}",
        "",
        "| target | measured | |",
        "|---|---:|---|",
        f"| sweep CPU ≤ 3× floor CPU | {r['sweep_cpu_over_floor_cpu']:.1f}× | {ok(r['sweep_cpu_over_floor_cpu'] <= 3)} |",
        f"| --threads 2 ≥ 1.8× faster (wall) | {r['t1_wall_over_t2_wall']:.2f}× | {ok(r['t1_wall_over_t2_wall'] >= 1.8)} |",
        f"| floor ≥ 80 % of plain zstd throughput | {100 * r['floor_mbps_over_plain_zstd_mbps']:.0f} % | "
        f"{ok(r['floor_mbps_over_plain_zstd_mbps'] >= 0.8)} |",
        f"| sweep ≥ 10× faster than NumPy (CPU; NumPy lower bound) | ≥ {r['numpy_lower_bound_cpu_over_sweep_cpu']:.2f}× | "
        f"{'met' if r['numpy_lower_bound_cpu_over_sweep_cpu'] >= 10 else 'not shown'} |",
        f"| same 12 pairs: NumPy CPU / swift CPU (≥ 10×) | {r['numpy_cpu_over_same_pairs_cpu']:.2f}× | "
        f"{ok(r['numpy_cpu_over_same_pairs_cpu'] >= 10)} |",
        f"| peak RSS ≤ 2× largest step's decoded fields | {r['peak_rss_over_largest_step']:.2f}× | "
        f"{ok(r['peak_rss_over_largest_step'] <= 2)} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
