"""The sweep-file example of docs/sweeps.md is valid, and `starkv sweep plan` reads it as Python's
tomllib does (the Swift parser implements a TOML subset; this checks they agree on real text)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import starkv_bin
from sweep_fixtures import ROOT, make_sweep

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
pytestmark = pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN not set (make test-python builds it)")


def doc_example() -> str:
    text = open(os.path.join(ROOT, "docs", "sweeps.md")).read()
    return re.search(r"```toml\n(.*?)```", text, re.S).group(1)


def test_documented_example_plans_as_tomllib_reads_it(tmp_path):
    binary = starkv_bin()
    make_sweep(str(tmp_path), binary)
    text = re.sub(r"^traces = .*$", 'traces = ["traces/*.starkv"]', doc_example(), flags=re.M)
    (tmp_path / "doc.toml").write_text(text)
    want = tomllib.loads(text)
    p = subprocess.run([binary, "sweep", "plan", str(tmp_path / "doc.toml"), "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["policies"] == want["policies"]
    assert plan["budgets"] == [f"{b}%" if isinstance(b, int) else b for b in want["budgets"]]
    assert plan["logits"] == want["logits"] and plan["allocator"] == want["allocator"]
    assert plan["retainPrevious"] == want["retain_previous"]
    units = plan["units"]
    n = 2 * len(want["models"]) * len(want["gpus"]) * len(want["attention"]) * len(want["kv_heads"]) * len(want["loops"])
    assert len(units) == n
    # trace-major, then models, GPUs, attention, KV heads, loops in file order
    combos = [(t, m, g, a, k, l) for t in ("traces/a.starkv", "traces/b.starkv") for m in want["models"]
              for g in want["gpus"] for a in want["attention"] for k in want["kv_heads"] for l in want["loops"]]
    assert [(u["trace"], u["model"], u["gpu"], u["attention"], u["kvHeads"], u["loop"]) for u in units] == combos
