"""`starkv memory` speaks `starkv replay`'s flag vocabulary (docs/report.md §5): --vision-attn (old
--vit-attn kept), the shared budget parser, the same GPU names, --gpu-name; its JSON carries a
schemaVersion; its grid runs one trajectory per screen × budget."""

import json
import subprocess

import pytest

from conftest import starkv_bin


def run(*args):
    return subprocess.run([starkv_bin(), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(autouse=True)
def need_binary():
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset")


def memory_json(tmp_path, *args):
    out = tmp_path / "m.json"
    r = run("memory", "--screenshots", "1..2", "--json", str(out), *args)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_vision_attn_and_the_old_vit_attn_name_the_same_setting(tmp_path):
    a = memory_json(tmp_path, "--attn", "flash", "--vision-attn", "eager")
    b = memory_json(tmp_path, "--attn", "flash", "--vit-attn", "eager")
    ta, tb = a["trajectories"][0]["report"], b["trajectories"][0]["report"]
    assert ta["config"]["visionAttention"] == "eager" and ta == tb


def test_budget_lists_use_the_shared_parser(tmp_path):
    d = memory_json(tmp_path, "--budget", "20,100,4096tok")
    assert [t["budget"] for t in d["trajectories"]] == ["20%", "full", "4096tok"]
    peaks = {t["budget"]: t["report"]["peakAllocatedBytes"] for t in d["trajectories"]}
    assert peaks["20%"] < peaks["full"]
    bad = run("memory", "--budget", "20,20")
    assert bad.returncode != 0 and "given twice" in bad.stderr
    neg = run("memory", "--budget", "5,-5")
    assert neg.returncode != 0 and "negative" in neg.stderr


def test_grid_runs_every_screen_and_budget_and_names_custom_gpus(tmp_path):
    d = memory_json(tmp_path, "--screen", "1280x720,1920x1080", "--budget", "10,100", "--gpu", "custom:30GB")
    assert d["schemaVersion"] == 2 and d["gpuName"] == "custom 30 GB"
    assert [(t["screen"], t["budget"]) for t in d["trajectories"]] == [
        ("1280x720", "10%"), ("1280x720", "full"), ("1920x1080", "10%"), ("1920x1080", "full")]
    named = memory_json(tmp_path, "--gpu", "custom:30GB", "--gpu-name", "lab card")
    assert named["gpuName"] == "lab card"
    # The verdict per GPU: the same trajectories on the default other GPUs.
    assert [o["gpuName"] for o in d["otherGPUs"]] == ["NVIDIA H100 SXM5 80GB", "NVIDIA A100 SXM4 80GB", "NVIDIA H200 141GB"]
    assert len(d["otherGPUs"][0]["trajectories"]) == 4


def test_outputs_must_differ_and_snapshots_need_the_caching_allocator(tmp_path):
    same = run("memory", "--json", str(tmp_path / "x"), "--html", str(tmp_path / "x"))
    assert same.returncode != 0 and "different files" in same.stderr
    paged = run("memory", "--allocator", "paged", "--memory-snapshot", str(tmp_path / "s.pickle"))
    assert paged.returncode != 0 and "caching allocator" in paged.stderr
    assert not (tmp_path / "s.pickle").exists()
