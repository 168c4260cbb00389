"""Round trip of `--memory-snapshot`: StarKV writes the simulated caching allocator's history as the
pickle `torch.cuda.memory._dump_snapshot` writes; PyTorch's own memory_viz functions
(`torch.cuda._memory_viz`, which run without a GPU) must read it and their totals must equal the
simulator's peaks (docs/report.md §3)."""

import json
import pickle
import subprocess

import pytest

from conftest import starkv_bin

torch = pytest.importorskip("torch")
from torch.cuda import _memory_viz as mv  # noqa: E402


def starkv(*args):
    r = subprocess.run([starkv_bin(), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, " ".join(args) + "\n" + r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset (make test-python builds starkv and sets it)")
    d = tmp_path_factory.mktemp("memviz")
    starkv("memory", "--model", "qwen2.5-vl-7b", "--screen", "1920x1080", "--screenshots", "1..3", "--attn", "eager",
           "--json", str(d / "m.json"), "--memory-snapshot", str(d / "snap.pickle"))
    report = json.loads((d / "m.json").read_text())
    with open(d / "snap.pickle", "rb") as f:
        snap = pickle.load(f)
    return report, snap


def replay_trace(snap):
    """Running totals over the device trace, as the memory viewer's timeline draws them."""
    reserved = requested = 0
    peak_reserved = peak_requested = 0
    for e in snap["device_traces"][0]:
        a = e["action"]
        if a in ("segment_alloc", "segment_map"):
            reserved += e["size"]
        elif a in ("segment_free", "segment_unmap"):
            reserved -= e["size"]
        elif a == "alloc":
            requested += e["size"]
        elif a == "free_completed":
            requested -= e["size"]
        peak_reserved = max(peak_reserved, reserved)
        peak_requested = max(peak_requested, requested)
    return peak_reserved, peak_requested


def test_memory_json_carries_a_schema_version(memory_run):
    report, _ = memory_run
    assert report["schemaVersion"] == 2
    assert len(report["trajectories"]) == 1


def test_memory_viz_totals_equal_the_simulator_peaks(memory_run):
    report, snap = memory_run
    traj = report["trajectories"][0]["report"]
    assert set(snap) >= {"segments", "device_traces", "allocator_settings"}
    # The segments are the allocator's state at the trajectory's allocated peak.
    active = sum(mv.calc_active(seg) for seg in snap["segments"])
    assert active == traj["peakAllocatedBytes"]
    # memory_viz's flame-graph input: one line per block; active blocks sum to the same figure.
    lines = mv.memory(snap, format_flamegraph=lambda text: text).splitlines()
    assert sum(int(l.rsplit(" ", 1)[1]) for l in lines if ";active_allocated;" in l) == traj["peakAllocatedBytes"]
    # segsum checks its own accounting (raises on a mismatch) and reports the totals.
    text = mv.segsum(snap)
    assert "total_reserved" in text and "total_allocated" in text
    # The timeline's running totals reach the simulator's peak reserved and requested bytes.
    peak_reserved, peak_requested = replay_trace(snap)
    assert peak_reserved == traj["peakReservedBytes"]
    assert peak_requested == traj["peakRequestedBytes"]
    # The Python trace printer and the HTML timeline builder accept it.
    assert mv.trace(snap).startswith("Device 0")
    assert "snapshot.pickle" in mv.trace_plot(snap)


def test_frames_name_the_phase_and_tensor(memory_run):
    _, snap = memory_run
    phases = {e["frames"][1]["name"] for e in snap["device_traces"][0] if e["frames"]}
    assert {"load", "vision", "prefill", "lm_head"} <= phases
    largest = max((b for s in snap["segments"] for b in s["blocks"] if b["state"] == "active_allocated"), key=lambda b: b["size"])
    assert largest["frames"] and "@" in largest["frames"][0]["name"]


def test_replay_snapshot_matches_its_run(tmp_path):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset")
    sample = __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "..", "traces", "sample-1280x720.starkv")
    out = tmp_path / "rep"
    r = starkv("replay", sample, "--policies", "snapkv,full", "--budgets", "20", "--out", str(out), "--quiet",
               "--memory-snapshot", str(tmp_path / "s.pickle"), "--snapshot-run", "snapkv@20%")
    assert "memory snapshot of snapkv@20%" in r.stdout
    results = json.loads((out / "results.json").read_text())
    run = next(x for x in results["runs"] if x["policy"] == "snapkv")
    with open(tmp_path / "s.pickle", "rb") as f:
        snap = pickle.load(f)
    assert sum(mv.calc_active(seg) for seg in snap["segments"]) == run["summary"]["peakAllocatedBytes"]
    assert replay_trace(snap)[0] == run["summary"]["peakReservedBytes"]
