"""The Slurm job-array template (scripts/slurm/*.sbatch) run with bash and the environment Slurm
gives array tasks: three tasks then the merge job equal a single-process sweep byte for byte."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import starkv_bin
from sweep_fixtures import ROOT, make_sweep, tree

pytestmark = pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN not set (make test-python builds it)")

ARRAY = os.path.join(ROOT, "scripts", "slurm", "sweep-array.sbatch")
MERGE = os.path.join(ROOT, "scripts", "slurm", "sweep-merge.sbatch")


def test_array_tasks_and_merge_job_give_the_single_process_sweep(tmp_path):
    binary = starkv_bin()
    sweep = make_sweep(str(tmp_path), binary)
    out = tmp_path / "out"
    env = {**os.environ, "STARKV_BIN": binary}
    for task in (2, 0, 1):  # Slurm runs array tasks in any order
        e = {**env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_CPUS_PER_TASK": "1"}
        subprocess.run(["bash", ARRAY, sweep, str(out)], env=e, check=True, capture_output=True, timeout=300)
    subprocess.run(["bash", MERGE, str(out)], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([binary, "sweep", "run", sweep, "--out", str(tmp_path / "single"), "--quiet"], check=True,
                   capture_output=True, timeout=300)
    got, want = tree(str(out / "merged")), tree(str(tmp_path / "single"))
    assert sorted(got) == sorted(want)
    assert all(got[k] == want[k] for k in want)


def test_array_task_outside_an_array_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    p = subprocess.run(["bash", ARRAY, "x.toml", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "job array" in p.stderr
