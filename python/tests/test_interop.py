"""Interop with the Swift reader: Python writes a multi-step trace with every field; `starkv
validate`, `starkv inspect` and `starkv dump` read it back and return exactly what Python wrote."""
import json

import numpy as np
import pytest

from conftest import starkv, starkv_bin
from starkv_recorder import Chunk, Step, TraceWriter, make_header, trace_pb2 as pb
from starkv_recorder.format import FULL_FIELDS

pytestmark = pytest.mark.skipif(starkv_bin() is None,
                                reason="STARKV_BIN is unset or names no executable: run via `make test-python`, which builds the Swift CLI")

H, HKV, LAYERS, WIN_ROWS = 4, 2, 2, 3


def make_step(idx, L, n_images, rng, win_dtype):
    images = []
    pos = 2
    for i in range(n_images):
        gh, gw = 1 + (i % 2), 2
        images.append(pb.ImageEntry(span_start=pos, span_end=pos + gh * gw, grid_t=1, grid_h=gh, grid_w=gw,
                                    original_width=56 * gw, original_height=56 * gh, resized_width=28 * gw,
                                    resized_height=28 * gh, frame_age=n_images - 1 - i))
        pos += gh * gw + 2
    assert pos < L
    V = sum(im.span_end - im.span_start for im in images)
    Vprev = V - (images[-1].span_end - images[-1].span_start)
    tt = np.full(L, pb.TOKEN_INSTRUCTION, np.uint8)
    tt[:2] = pb.TOKEN_TEMPLATE
    tt[-3:] = pb.TOKEN_GENERATION_PROMPT
    for im in images:
        tt[im.span_start - 1] = tt[im.span_end] = pb.TOKEN_VISION_MARKER
        tt[im.span_start:im.span_end] = pb.TOKEN_VISUAL
    chunks = []
    for layer in range(LAYERS):
        chunks += [Chunk("win_sum", layer, (rng.random((4, H, L)) * 8).astype(win_dtype)),
                   Chunk("hid_norm", layer, (rng.random(V) * 100).astype(np.float32)),
                   Chunk("colsum_all", layer, (rng.random((H, L)) * 30).astype(np.float32)),
                   Chunk("colsum_postvis", layer, rng.random((H, L)).astype(np.float32)),
                   Chunk("count_gt_001", layer, rng.integers(0, 1000, H).astype(np.int64)),
                   Chunk("n_valid", layer, np.array([L * (L + 1) // 2], np.int64)),
                   Chunk("decode_attn_sum", layer, rng.random((H, L)).astype(np.float32)),
                   Chunk("win_rows", layer, rng.random((H, WIN_ROWS, L)).astype(np.float16))]
        if Vprev:
            chunks.append(Chunk("guikv_resid", layer, (rng.random((HKV, Vprev)) * 5).astype(np.float32)))
    return Step(episode_id="ep" if idx < 2 else "ep2", step_index=idx, prompt_length=L, token_types=tt,
                token_ids=rng.integers(0, 400, L).astype(np.int32), images=images, chunks=chunks,
                generated_tokens=7, reset=idx in (0, 2), step_in_episode=idx % 2)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(1234)
    header = make_header(model_id="tiny-vl", num_layers=LAYERS, num_query_heads=H, num_kv_heads=HKV, head_dim=16,
                         hidden_size=64, vocab_size=400, intermediate_size=128, dtype=pb.DTYPE_BF16,
                         fidelity="full", window_sizes=(8, 16, 32, 64), win_rows_max=WIN_ROWS,
                         agent=pb.AgentLoop(attn_implementation="sdpa", stored_kv_heads=HKV, screen_width=112,
                                            screen_height=84, image_slots=3, max_new_tokens=16,
                                            benchmark="interop"))
    steps = [make_step(0, 40, 1, rng, np.float32), make_step(1, 52, 2, rng, np.float16),
             make_step(2, 61, 3, rng, np.float32)]
    path = tmp_path_factory.mktemp("interop") / "py.starkv"
    with TraceWriter(path, header) as w:
        for s in steps:
            w.write_step(s)
    return str(path), steps


def test_swift_validate_accepts_the_python_trace(written):
    out = starkv("validate", written[0]).stdout
    assert out.startswith("OK:") and "3 steps" in out


def test_swift_inspect_reads_header_and_steps(written):
    path, steps = written
    info = json.loads(starkv("inspect", "--json", path).stdout)
    assert info["footerPresent"] and info["formatVersion"] == "1.0"
    assert [s["promptLength"] for s in info["steps"]] == [s.prompt_length for s in steps]
    assert [s["images"] for s in info["steps"]] == [1, 2, 3]
    assert [s["reset"] for s in info["steps"]] == [True, False, True]
    assert [s["chunks"] for s in info["steps"]] == [len(s.chunks) for s in steps]
    assert set(info["steps"][2]["fields"]) == set(FULL_FIELDS)
    assert "tiny-vl" in starkv("inspect", path).stdout


@pytest.mark.parametrize("pos", [0, 1, 2])
def test_swift_dump_returns_exactly_the_values_python_wrote(written, pos):
    path, steps = written
    for c in steps[pos].chunks:
        d = json.loads(starkv("dump", path, "--step", str(pos), "--field", c.field, "--layer", str(c.layer)).stdout)
        assert d["shape"] == list(c.array.shape), (c.field, c.layer)
        expect_dtype = {np.float32: "f32", np.float16: "f16", np.int64: "i64"}[c.array.dtype.type]
        assert d["dtype"] == expect_dtype
        got = np.asarray(d["values"], dtype=np.float64)
        # f16/f32 widen exactly to double and i64 values are small: equality is exact
        np.testing.assert_array_equal(got, c.array.astype(np.float64).reshape(-1), err_msg=f"{c.field} {c.layer}")


def test_swift_validate_rejects_a_corrupted_python_trace(written, tmp_path):
    data = bytearray(open(written[0], "rb").read())
    data[len(data) // 3] ^= 0x01
    bad = tmp_path / "bad.starkv"
    bad.write_bytes(bytes(data))
    r = starkv("validate", str(bad), check=False)
    assert r.returncode != 0 and "FAIL" in (r.stdout + r.stderr)
