"""The `starkv` Python API: results folders as tidy DataFrames, `replay(...)` through the CLI, and
the lazy `TraceFile` reader."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import starkv_bin
from sweep_fixtures import SAMPLE, make_sweep

import starkv
from starkv import StarKVNotFoundError, TraceFile, load_results, replay
from starkv_recorder import TraceChecksumError, TraceReader

needs_bin = pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN not set (make test-python builds it)")


@pytest.fixture(scope="module")
def single_replay(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    frames = replay(SAMPLE, policies=["full", "snapkv", "h2o"], budgets=[10, 40, "256tok"], out=out, threads=1)
    return out, frames


@needs_bin
def test_replay_frames_have_one_row_per_policy_budget_step_and_numeric_budgets(single_replay):
    out, f = single_replay
    doc = json.load(open(out / "results.json"))
    n_runs = len(doc["runs"])
    assert len(f.runs) == n_runs
    assert len(f.steps) == sum(len(r["steps"]) for r in doc["runs"]) == n_runs * doc["trace"]["steps"]
    assert f.steps["budget_percent"].dtype == np.float64
    assert str(f.steps["budget_tokens"].dtype) == "Int64"
    tok = f.runs[f.runs["budget"] == "256tok"]
    assert len(tok) == 2 and (tok["budget_tokens"] == 256).all() and tok["budget_percent"].isna().all()
    pct = f.runs[f.runs["budget"] == "40%"]
    assert (pct["budget_percent"] == 40.0).all()
    # Numeric budgets sort numerically: 10 < 40 < 100 (as strings "100%" < "10%" < "40%").
    order = f.runs.dropna(subset=["budget_percent"]).sort_values("budget_percent")["budget"].unique().tolist()
    assert order == ["10%", "40%", "100%"]


@needs_bin
def test_replay_frames_match_results_json_and_carry_provenance(single_replay):
    out, f = single_replay
    doc = json.load(open(out / "results.json"))
    run = next(r for r in doc["runs"] if r["policy"] == "snapkv" and r["budget"] == "10%")
    step = run["steps"][2]
    row = f.steps[(f.steps.policy == "snapkv") & (f.steps.budget == "10%") & (f.steps.step == step["step"])].iloc[0]
    assert row.allocated_peak_bytes == step["allocatedPeakBytes"]
    assert row.allocated_peak_gb == pytest.approx(step["allocatedPeakBytes"] / 1e9, rel=0, abs=1e-12)
    assert row.kept_tokens_mean == step["keptTokensMean"]
    assert row.scoring_flops == step["flops"]["scoring"]
    assert row.decode_mass_retained == step["decodeMassRetained"]
    assert bool(row.oom) == step["oom"]
    sha = hashlib.sha256(open(SAMPLE, "rb").read()).hexdigest()
    assert (f.steps.trace_sha256 == sha).all() and (f.runs.trace_sha256 == sha).all()
    assert (f.runs.gpu == doc["settings"]["gpu"]).all()
    assert (f.runs.kv_heads == doc["settings"]["storedKVHeads"]).all()
    assert (f.runs.kept_digest_version == doc["settings"]["keptDigestVersion"]).all()
    assert f.digest == doc["digest"]


@needs_bin
def test_dataframe_agrees_with_the_swift_tidy_csv(single_replay):
    out, f = single_replay
    csv = pd.read_csv(out / "runs.csv", keep_default_na=False, na_values=[""])
    assert len(csv) == len(f.runs)
    for col in ("policy", "budget", "trace_sha256", "gpu", "kept_digest"):
        assert csv[col].astype(str).tolist() == f.runs[col].astype(str).tolist(), col
    assert csv["peak_allocated_bytes"].tolist() == f.runs["peak_allocated_bytes"].astype("int64").tolist()
    np.testing.assert_array_equal(csv["budget_percent"].to_numpy(dtype=float), f.runs["budget_percent"].to_numpy(dtype=float))
    steps = pd.read_csv(out / "steps.csv", keep_default_na=False, na_values=[""])
    assert len(steps) == len(f.steps)
    assert steps["allocated_peak_bytes"].tolist() == f.steps["allocated_peak_bytes"].astype("int64").tolist()


@needs_bin
def test_merged_sweep_loads_with_one_unit_id_per_unit(tmp_path):
    binary = starkv_bin()
    sweep = make_sweep(str(tmp_path), binary)
    subprocess.run([binary, "sweep", "run", sweep, "--out", str(tmp_path / "out"), "--quiet"], check=True,
                   capture_output=True, timeout=300)
    f = load_results(tmp_path / "out")
    doc = json.load(open(tmp_path / "out" / "sweep.json"))
    assert f.digest == doc["digest"]
    assert f.runs["unit_id"].nunique() == len(doc["units"]) == 4
    assert len(f.steps) == sum(len(r["steps"]) for u in doc["units"] for r in u["results"]["runs"])
    assert set(f.runs["gpu"]) == {"h100-sxm-80gb", "a100-sxm-80gb"}
    assert set(f.runs["trace_path"]) == {"traces/a.starkv", "traces/b.starkv"}
    assert set(f.runs.loc[f.runs.policy_name == "starkv", "policy_options"]) == {"mi=off;temporal=off"}
    # the tidy table pivots directly
    pivot = f.runs.pivot_table(index=["trace_path", "gpu", "policy"], columns="budget", values="peak_allocated_gb")
    assert pivot.shape[0] == 2 * 2 * 3
    # An unmerged shard folder loads too: its units' rows, the same values as in the merge.
    subprocess.run([binary, "sweep", "run", sweep, "--shard", "1/2", "--out", str(tmp_path / "s1"), "--quiet"],
                   check=True, capture_output=True, timeout=300)
    shard = load_results(tmp_path / "s1")
    ids = [u["unit"]["id"] for u in doc["units"]][1::2]
    assert shard.runs["unit_id"].unique().tolist() == ids
    part = f.runs[f.runs.unit_id.isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(shard.runs, part)


def test_load_results_names_a_folder_without_results(tmp_path):
    with pytest.raises(starkv.ResultsError, match="no sweep.json or results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"schemaVersion": 99, "runs": [], "settings": {}, "digest": ""}')
    with pytest.raises(starkv.ResultsError, match="schema 99"):
        load_results(tmp_path)


def test_replay_without_an_executable_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("STARKV_BIN", str(tmp_path / "nope"))
    with pytest.raises(StarKVNotFoundError, match="STARKV_BIN=.*nope"):
        replay(SAMPLE)
    monkeypatch.delenv("STARKV_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StarKVNotFoundError, match="not on PATH"):
        replay(SAMPLE)


@needs_bin
def test_replay_reports_the_cli_error(tmp_path):
    with pytest.raises(starkv.StarKVCommandError, match="unknown policy 'nosuch'"):
        replay(SAMPLE, policies=["nosuch"], out=tmp_path / "o")


def test_trace_file_gives_the_same_tensors_as_the_whole_file_reader():
    whole = TraceReader(SAMPLE)
    with TraceFile(SAMPLE) as t:
        assert len(t) == len(whole.steps)
        assert not t.footer_missing
        for pos in (0, len(t) - 1):
            assert t.fields(pos) == whole.fields(pos)
            for field, layer in whole.fields(pos):
                a, b = whole.tensor(pos, field, layer), t.tensor(pos, field, layer)
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)


def test_trace_file_reads_only_what_is_asked():
    size = os.path.getsize(SAMPLE)
    with TraceFile(SAMPLE) as t:
        opened = t.bytes_read
        assert opened < 4096  # header, HEAD record, trailer, footer index
        rec = t.step(3)
        desc = next(c for c in rec.chunks if c.field == "colsum_all" and c.layer == 1)
        before = t.bytes_read
        a = t.tensor(3, "colsum_all", 1)
        assert a.shape == (t.header.model.num_query_heads, rec.prompt_length)
        # one frame header for the step, one for the chunk, the chunk payload
        assert t.bytes_read - before == 24 + 24 + desc.stored_bytes
        assert t.bytes_read < size / 20
        layers = dict(t.layers(3, "colsum_all"))
        assert sorted(layers) == list(range(t.header.model.num_layers))
        np.testing.assert_array_equal(layers[1], a)


def test_trace_file_without_footer_reads_the_complete_steps(tmp_path):
    whole = TraceReader(SAMPLE)
    data = open(SAMPLE, "rb").read()
    foot = whole.steps[-1].chunk_offsets[-1] + whole.steps[-1].record.chunks[-1].stored_bytes
    cut = tmp_path / "cut.starkv"
    cut.write_bytes(data[:foot - 100])  # recorder killed inside the last step's last chunk
    with TraceFile(cut) as t:
        assert t.footer_missing
        assert len(t) == len(whole.steps) - 1
        np.testing.assert_array_equal(t.tensor(1, "win_sum", 0), whole.tensor(1, "win_sum", 0))


def test_trace_file_names_step_and_field_of_a_corrupt_chunk(tmp_path):
    whole = TraceReader(SAMPLE)
    entry = whole.steps[2]
    k = next(i for i, c in enumerate(entry.record.chunks) if c.field == "hid_norm")
    data = bytearray(open(SAMPLE, "rb").read())
    data[entry.chunk_offsets[k] + 5] ^= 0x40
    bad = tmp_path / "bad.starkv"
    bad.write_bytes(bytes(data))
    with TraceFile(bad) as t:
        np.testing.assert_array_equal(t.tensor(1, "hid_norm", entry.record.chunks[k].layer),
                                      whole.tensor(1, "hid_norm", entry.record.chunks[k].layer))
        with pytest.raises(TraceChecksumError, match=r"step 2 field 'hid_norm'"):
            t.tensor(2, "hid_norm", entry.record.chunks[k].layer)
    with pytest.raises(IndexError, match="out of range"):
        TraceFile(SAMPLE).step(99)
