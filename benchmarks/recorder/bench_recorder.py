"""Recorder overhead on the tiny random-weight Qwen2.5-VL (CPU): generate() with and without a
Recorder at each fidelity, on a 3-screenshot agent prompt. Prints a table and a JSON line.

    .venv/bin/python benchmarks/recorder/bench_recorder.py [--reps 5] [--new-tokens 16] [--side 448]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from starkv_recorder import Recorder
from starkv_recorder.tiny import tiny_model, tiny_processor, tiny_screenshot


def prompt(processor, n_images, side):
    msgs = [{"role": "system", "content": "You are a helpful GUI agent."}]
    images = []
    for i in range(n_images):
        images.append(tiny_screenshot(side, side * 3 // 4, i))
        msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Open the settings menu."}]})
        if i < n_images - 1:
            msgs.append({"role": "assistant", "content": "Thought: click. Action: click(start_box='(12,4)')"})
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    processor = tiny_processor(max_pixels=28 * 28 * 256)
    model = tiny_model(processor, attn_implementation="sdpa", num_layers=a.layers)
    inputs = prompt(processor, 3, a.side)
    L = inputs["input_ids"].shape[1]
    gen = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)

    def run(fields):
        times = []
        with tempfile.TemporaryDirectory() as d:
            for r in range(a.reps + 1):
                t0 = time.perf_counter()
                if fields is None:
                    with torch.no_grad():
                        model.generate(**inputs, **gen)
                else:
                    with Recorder(os.path.join(d, f"{r}.starkv"), model, processor, fields=fields) as rec:
                        model.generate(**inputs, **gen)
                if r:  # the first run warms up
                    times.append(time.perf_counter() - t0)
        return statistics.median(times)

    base = run(None)
    rows = {"none": base}
    for f in ("core", "standard", "full"):
        rows[f] = run(f)
    print(f"tiny Qwen2.5-VL, {a.layers} layers, H=8, Hkv=4, d=16; prompt L={L} (3 screenshots), "
          f"{a.new_tokens} new tokens, {a.threads} thread(s), median of {a.reps}")
    print(f"{'fields':10s} {'generate s':>10s} {'overhead':>9s}")
    for k, v in rows.items():
        print(f"{k:10s} {v:10.4f} {100 * (v / base - 1):8.1f}%")
    print(json.dumps({"L": L, "new_tokens": a.new_tokens, "layers": a.layers, "threads": a.threads,
                      "median_s": rows, "torch": torch.__version__, "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
