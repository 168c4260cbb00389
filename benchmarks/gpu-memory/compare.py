"""Compares `starkv memory` with the peaks measured on a GPU by measure_torch.py.

For every results/*.json it runs `starkv memory` with the same screen, screenshots, attention
(sdpa is compared with the model's flash: both keep attention scores out of memory), 8 generated
tokens, last-token logits (transformers 5.x `generate` computes prefill logits for the last
position only) and --no-retain-previous (each measured step is a fresh `generate`), and prints
predicted vs measured max_memory_allocated (and max_memory_reserved when the measurement kept
the allocator cache across steps, as the model does).
Usage: python benchmarks/gpu-memory/compare.py [--bin .build/release/starkv]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def predict(binary: str, r: dict) -> list[dict]:
    attn = "flash" if r["attn"] == "sdpa" else r["attn"]
    n = len(r["steps"])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "m.json")
        cmd = [binary, "memory", "--model", "qwen2.5-vl-7b", "--screen", r["screen"], "--screenshots", f"1..{n}",
               "--attn", attn, "--no-retain-previous", "--generated", str(r["new_tokens"]), "--logits", "last",
               "--json", out]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
        with open(out) as f:
            data = json.load(f)
        # `starkv memory --json` schema 2 lists trajectories; schema 1 was one bare trajectory.
        return data["trajectories"][0]["report"]["steps"] if "schemaVersion" in data else data["steps"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release/starkv")
    a = ap.parse_args()
    rows = ["| run | shots | L | measured alloc GB | predicted GB | error | measured reserved GB | predicted GB | error |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for path in sorted(glob.glob(os.path.join(HERE, "results", "*.json"))):
        r = json.load(open(path))
        pred = predict(a.bin, r)
        name = os.path.basename(path)[:-5]
        for m, p in zip(r["steps"], pred):
            if p["promptTokens"] != m["prompt_tokens"]:
                sys.exit(f"{name}: prompt length differs (model {p['promptTokens']}, measured {m['prompt_tokens']})")
            ea = p["allocatedPeakBytes"] / m["max_allocated_bytes"] - 1
            worst = max(worst, abs(ea))
            if r.get("keep_cache"):
                er = p["reservedPeakBytes"] / m["max_reserved_bytes"] - 1
                res = f"{m['max_reserved_bytes'] / 1e9:.3f} | {p['reservedPeakBytes'] / 1e9:.3f} | {er * 100:+.1f} %"
            else:
                res = "- | - | -"
            rows.append(f"| {name} | {m['screenshots']} | {m['prompt_tokens']} | {m['max_allocated_bytes'] / 1e9:.3f} | "
                        f"{p['allocatedPeakBytes'] / 1e9:.3f} | {ea * 100:+.2f} % | {res} |")
    print("\n".join(rows))
    print(f"\nlargest allocated-peak error: {worst * 100:.2f} %")


if __name__ == "__main__":
    main()
