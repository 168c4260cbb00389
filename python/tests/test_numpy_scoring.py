"""The NumPy SnapKV / STaR-KV of the replay benchmark (benchmarks/replay/numpy_scoring.py)
selects what the Swift policies select: kept sets from `starkv replay --dump-kept` on the
shipped sample trace are compared layer by layer. If they drifted apart, the benchmark's ratio
would compare two different computations."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import starkv, starkv_bin

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "benchmarks", "replay"))

import numpy_scoring as ns  # noqa: E402
from starkv_recorder.format import TraceReader  # noqa: E402

SAMPLE = os.path.join(REPO, "traces", "sample-1280x720.starkv")


# ---- hand-checked primitives ----------------------------------------------------------------

def test_avg_pool_counts_padding_in_the_divisor():
    # k = 3, padding 1: out[0] = (0 + 3 + 6) / 3, out[1] = (3 + 6 + 9) / 3, out[2] = (6 + 9 + 0) / 3
    out = ns.avg_pool(np.array([[3, 6, 9]], dtype=np.float32), 3)
    assert out.tolist() == [[3.0, 6.0, 5.0]]


def test_topk_breaks_ties_by_lower_position():
    scores = np.array([[1.0, 5.0, 2.0, 5.0, 2.0, 2.0]])
    assert np.flatnonzero(ns.topk_mask(scores, 3)[0]).tolist() == [1, 2, 3]
    assert np.flatnonzero(ns.topk_mask(scores, 4)[0]).tolist() == [1, 2, 3, 4]


def test_budget_plan_clamps_the_window_to_capacity_minus_two():
    plan = ns.BudgetPlan.make(100, 5, 8)  # C = 5, w = min(8, 3) = 3, P = 97
    assert (plan.capacity, plan.window, plan.past, plan.compresses) == (5, 3, 97, True)
    assert ns.BudgetPlan.make(10, 100, 8).compresses      # C = 10 = L: the references compress
    assert not ns.BudgetPlan.make(10, 110, 8).compresses  # C = 11 > L: keep everything


def test_pseudo_grid_rounds_half_to_even():
    assert ns.pseudo_grid(2691) == (52, 52)  # sqrt = 51.87 -> 52, ceil(2691 / 52) = 52
    assert ns.pseudo_grid(6) == (2, 3)      # sqrt = 2.449 -> 2


def test_mutual_information_is_zero_without_signal_and_positive_for_a_blob():
    assert ns.spatial_mutual_information(np.array([3.0]), 1, 1) == 0.0  # a single token
    blob = np.zeros(144)
    blob[:12] = 1.0  # the whole first row of the grid
    assert ns.spatial_mutual_information(blob, 12, 12) > 0.1
    assert ns.spatial_mutual_information(np.zeros(144), 12, 12) == 0.0


# ---- agreement with the Swift replay ------------------------------------------------------

@pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN not set (make test-python builds it)")
@pytest.mark.parametrize("policy", ["snapkv", "starkv"])
def test_numpy_kept_sets_match_the_swift_replay(tmp_path, policy):
    dump = tmp_path / "kept.jsonl"
    starkv("replay", SAMPLE, "--policies", policy, "--budgets", "10,20,40", "--threads", "2", "--quiet",
           "--out", str(tmp_path / "report"), "--dump-kept", str(dump))
    swift = {}
    for line in dump.read_text().splitlines():
        r = json.loads(line)
        swift[(r["budget"], r["step"], r["layer"])] = r["kept"]
    reader = TraceReader(SAMPLE)
    compared = identical = 0
    for budget in (10, 20, 40):
        for pos, layer, kept in ns.replay_trace(reader, policy, budget):
            step = reader.steps[pos].record.step_index
            want = swift[(f"{budget}%", step, layer)]
            got = [row.tolist() for row in kept]
            compared += 1
            if policy == "snapkv":
                assert got == want, f"snapkv {budget}% step {step} layer {layer}"
                identical += 1
            else:
                identical += got == want
                # Even where last-bit exp/log/pow differences reorder a near-tie, the two sets
                # differ by at most a handful of positions.
                overlap = len(set(got[0]) & set(want[0])) / len(want[0])
                assert overlap >= 0.99, f"starkv {budget}% step {step} layer {layer}: overlap {overlap:.4f}"
    assert compared == 3 * len(reader.steps) * reader.header.model.num_layers
    assert identical / compared >= 0.95, f"{identical}/{compared} layers identical"
    print(f"{policy}: {identical}/{compared} layers identical")
