"""Shared set-up of the sweep / results tests: two small traces and a sweep file over them."""
from __future__ import annotations

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "traces", "sample-1280x720.starkv")

SWEEP_TOML = """\
# 2 traces x 2 GPUs = 4 units, each 3 policies x 2 budgets (full runs at 100 %)
starkv_sweep = 1
traces = ["traces/*.starkv"]
policies = ["full", "snapkv", "starkv(temporal=off;mi=off)"]
budgets = [10, "64tok"]
gpus = ["h100-80gb", "a100-80gb"]
threads = 1
"""


def make_sweep(root: str, binary: str) -> str:
    """Writes root/traces/{a,b}.starkv and root/sweep.toml; returns the sweep file's path."""
    os.makedirs(os.path.join(root, "traces"), exist_ok=True)
    shutil.copyfile(SAMPLE, os.path.join(root, "traces", "a.starkv"))
    subprocess.run([binary, "record", "synth", "--out", os.path.join(root, "traces", "b.starkv"), "--model", "tiny-vl",
                    "--screen", "640x360", "--steps", "3", "--image-slots", "2", "--fields", "standard", "--seed", "2",
                    "--quiet"], check=True, capture_output=True, timeout=120)
    path = os.path.join(root, "sweep.toml")
    with open(path, "w") as f:
        f.write(SWEEP_TOML)
    return path


def tree(root: str) -> dict[str, bytes]:
    """{relative path: bytes} of every file under root."""
    out: dict[str, bytes] = {}
    for d, _dirs, names in os.walk(root):
        for n in names:
            full = os.path.join(d, n)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, root)] = fh.read()
    return out
