"""End to end on a tiny random-weight Qwen2.5-VL built from a config (no download): record an
agent loop with images, check the trace against brute-force eager attention of the same model."""
import json
import re
import sys

import numpy as np
import pytest
import torch

from conftest import episode_inputs, starkv, starkv_bin
from starkv_recorder import Recorder, RecorderError, TraceReader, trace_pb2 as pb
from starkv_recorder.recorder import find_attention_layers
from starkv_recorder.tiny import tiny_model


def record(tmp_path, processor, model, steps, fields="full", name="run.starkv", max_new_tokens=4):
    path = tmp_path / name
    outs = []
    with Recorder(path, model, processor, fields=fields, win_rows_max=8, episode_id="ep-1") as rec:
        for inputs, images in steps:
            rec.next_step(original_sizes=[im.size for im in images])
            outs.append(model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False))
    return path, outs


@pytest.fixture(scope="module")
def recorded(tiny, tmp_path_factory):
    processor, model = tiny
    steps = [episode_inputs(processor, 1, seed=1), episode_inputs(processor, 2, seed=2),
             episode_inputs(processor, 3, seed=3)]
    path, outs = record(tmp_path_factory.mktemp("e2e"), processor, model, steps)
    eager = tiny_model(processor, attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return path, steps, outs, eager


def test_trace_has_one_step_per_generate_call_with_spans_and_types(recorded):
    path, steps, outs, _ = recorded
    r = TraceReader(path)
    assert not r.footer_missing and len(r.steps) == 3
    for pos, ((inputs, images), out) in enumerate(zip(steps, outs)):
        rec = r.steps[pos].record
        ids = inputs["input_ids"][0].tolist()
        assert rec.prompt_length == len(ids) and list(rec.token_ids) == ids
        assert rec.generated_tokens == out.shape[1] - len(ids)
        assert rec.episode_id == "ep-1" and rec.reset == (pos == 0) and rec.step_in_episode == pos
        assert len(rec.images) == len(images)
        grid = inputs["image_grid_thw"].tolist()
        for i, im in enumerate(rec.images):
            assert ids[im.span_start - 1] != ids[im.span_start]  # vision start precedes the pads
            assert (im.grid_t, im.grid_h * 2, im.grid_w * 2) == tuple(grid[i])
            assert (im.original_width, im.original_height) == images[i].size
            assert im.frame_age == len(images) - 1 - i
        tt = np.frombuffer(rec.token_types, dtype=np.uint8)
        assert (tt == pb.TOKEN_VISUAL).sum() == sum(im.span_end - im.span_start for im in rec.images)
        assert tt[-1] == pb.TOKEN_GENERATION_PROMPT and tt[0] == pb.TOKEN_TEMPLATE
        fields = {f for f, _ in r.fields(pos)}
        assert ("guikv_resid" in fields) == (len(images) >= 2)


def test_window_sums_and_column_sums_equal_brute_force_eager_attention(recorded):
    path, steps, _, eager = recorded
    r = TraceReader(path)
    ws = list(r.header.window_sizes)
    assert ws == [8, 16, 32, 64]
    for pos, (inputs, _) in enumerate(steps):
        with torch.no_grad():
            ref = eager(**inputs, output_attentions=True, output_hidden_states=True)
        L = inputs["input_ids"].shape[1]
        e_star = int(r.steps[pos].record.metadata["post_vision_start"])
        ids = inputs["input_ids"][0]
        assert ids[e_star].item() == eager.config.vision_end_token_id
        spans = [(im.span_start, im.span_end) for im in r.steps[pos].record.images]
        vis = np.concatenate([np.arange(s, e) for s, e in spans])
        layers = find_attention_layers(eager)
        for layer in range(len(layers)):
            A = ref.attentions[layer][0].double().numpy()  # [H, L, L]
            win = r.tensor(pos, "win_sum", layer)
            for wi, w in enumerate(ws):
                np.testing.assert_allclose(win[wi], A[:, L - min(w, L):].sum(axis=1), atol=1e-3)
            np.testing.assert_allclose(r.tensor(pos, "colsum_all", layer), A.sum(axis=1), atol=1e-3)
            np.testing.assert_allclose(r.tensor(pos, "colsum_postvis", layer), A[:, e_star:].sum(axis=1), atol=1e-3)
            cnt = r.tensor(pos, "count_gt_001", layer)
            # fp32 rounding of the two kernels may move one entry across 0.01; allow one per head
            assert np.abs(cnt - (A[:, e_star:] > 0.01).sum(axis=(1, 2))).max() <= 1
            assert r.tensor(pos, "n_valid", layer).tolist() == [sum(i + 1 for i in range(e_star, L))]
            np.testing.assert_allclose(r.tensor(pos, "win_rows", layer), A[:, L - 8:], atol=2e-3)
            normed = eager.model.language_model.layers[layer].input_layernorm(ref.hidden_states[layer])
            np.testing.assert_allclose(r.tensor(pos, "hid_norm", layer),
                                       normed[0, vis].norm(dim=-1).detach().double().numpy(), rtol=1e-4)


def test_decode_attention_sum_equals_eager_attention_of_the_generated_tokens(recorded):
    path, steps, outs, eager = recorded
    r = TraceReader(path)
    inputs, _ = steps[1]
    seq = outs[1]
    L = inputs["input_ids"].shape[1]
    T = seq.shape[1] - L
    assert T >= 2
    full = dict(inputs)
    full["input_ids"] = seq
    full["attention_mask"] = torch.ones_like(seq)
    full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, T, dtype=torch.long)], 1)
    with torch.no_grad():
        ref = eager(**full, output_attentions=True)
    assert r.steps[1].record.metadata["decode_forward_passes"] == str(T - 1)
    for layer in range(2):
        A = ref.attentions[layer][0].double().numpy()
        expect = A[:, L:L + T - 1, :L].sum(axis=1)   # queries of the T-1 generated tokens fed back
        np.testing.assert_allclose(r.tensor(1, "decode_attn_sum", layer), expect, atol=1e-4)


def test_recording_is_independent_of_the_attention_kernel_and_does_not_change_generation(tiny, tmp_path):
    processor, model = tiny
    eager = tiny_model(processor, attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    steps = [episode_inputs(processor, 2, seed=5)]
    with torch.no_grad():
        plain = model.generate(**steps[0][0], max_new_tokens=4, do_sample=False)
    p_sdpa, o_sdpa = record(tmp_path, processor, model, steps, fields="standard", name="sdpa.starkv")
    p_eager, _ = record(tmp_path, processor, eager, steps, fields="standard", name="eager.starkv")
    assert torch.equal(plain, o_sdpa[0])
    a, b = TraceReader(p_sdpa), TraceReader(p_eager)
    assert a.header.agent.attn_implementation == "sdpa" and b.header.agent.attn_implementation == "eager"
    for field, layer in a.fields(0):
        np.testing.assert_allclose(a.tensor(0, field, layer), b.tensor(0, field, layer), atol=1e-5)


def test_leaving_the_block_unpatches_everything(tiny, tmp_path):
    processor, model = tiny
    mod = sys.modules[type(find_attention_layers(model)[0]).__module__]
    before = mod.ALL_ATTENTION_FUNCTIONS
    inputs, _ = episode_inputs(processor, 1)
    with Recorder(tmp_path / "a.starkv", model, processor, fields="core") as rec:
        assert mod.ALL_ATTENTION_FUNCTIONS is not before and "generate" in vars(model)
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert mod.ALL_ATTENTION_FUNCTIONS is before
    assert "generate" not in vars(model)
    assert all(len(m._forward_pre_hooks) == 0 for m in find_attention_layers(model))
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert rec.steps_written == 1 and len(TraceReader(tmp_path / "a.starkv").steps) == 1


def test_core_fidelity_writes_only_core_fields(tiny, tmp_path):
    processor, model = tiny
    path, _ = record(tmp_path, processor, model, [episode_inputs(processor, 2)], fields="core")
    r = TraceReader(path)
    assert list(r.header.fields) == ["win_sum", "hid_norm", "guikv_resid"] and r.header.fidelity == pb.FIDELITY_CORE
    assert {f for f, _ in r.fields(0)} == {"win_sum", "hid_norm", "guikv_resid"}


def test_batched_prompts_are_refused_with_a_clear_error(tiny, tmp_path):
    processor, model = tiny
    inputs, _ = episode_inputs(processor, 1)
    batch = {k: torch.cat([v, v]) for k, v in inputs.items()}
    with Recorder(tmp_path / "b.starkv", model, processor) as _:
        with pytest.raises(RecorderError, match="batch size 1"):
            model.generate(**batch, max_new_tokens=2)
    assert len(TraceReader(tmp_path / "b.starkv").steps) == 0


def test_the_swift_cli_validates_and_inspects_a_recorded_trace(recorded):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset or names no executable (make test-python builds starkv and sets it)")
    path = str(recorded[0])
    assert "OK" in starkv("validate", path).stdout
    info = json.loads(starkv("inspect", "--json", path).stdout)
    assert len(info["steps"]) == 3 and info["footerPresent"]
    assert [s["images"] for s in info["steps"]] == [1, 2, 3]


def test_a_replay_of_the_recorded_trace_runs(recorded, tmp_path):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset or names no executable (make test-python builds starkv and sets it)")
    out = tmp_path / "replay"
    r = starkv("replay", str(recorded[0]), "--policies", "snapkv,starkv,guikv", "--budgets", "20,100",
               "--out", str(out), "--quiet", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads((out / "results.json").read_text())
    assert [(run["policyName"], run["budget"]) for run in results["runs"]] == [
        ("snapkv", "20%"), ("snapkv", "100%"), ("starkv", "20%"), ("starkv", "100%"), ("guikv", "20%"), ("guikv", "100%")]
    for run in results["runs"]:
        assert len(run["steps"]) == 3
        expected = 0.2 if run["budget"] == "20%" else 1.0
        for step in run["steps"]:
            assert abs(step["keptFraction"] - expected) < 0.01 + 1 / step["promptLength"]
    assert (out / "report.html").read_text().count("<svg") >= 2


def test_cli_records_a_scripted_episode_from_a_model_directory(tiny, tmp_path):
    from starkv_recorder.cli import main
    from starkv_recorder.tiny import tiny_screenshot
    processor, model = tiny
    mdir = tmp_path / "model"
    model.save_pretrained(mdir)
    processor.save_pretrained(mdir)
    for i in range(2):
        tiny_screenshot(112, 84, i).save(tmp_path / f"s{i}.png")
    ep = {"episode_id": "scripted", "system": "You are a GUI agent.",
          "steps": [{"screenshot": "s0.png", "instruction": "Open settings"},
                    {"screenshot": "s1.png", "instruction": "Scroll down"}]}
    (tmp_path / "ep.json").write_text(json.dumps(ep))
    out = tmp_path / "cli.starkv"
    rc = main(["--model", str(mdir), "--episode", str(tmp_path / "ep.json"), "--out", str(out),
               "--max-new-tokens", "3", "--fields", "core", "--attn-implementation", "eager"])
    assert rc == 0
    r = TraceReader(out)
    assert [len(s.record.images) for s in r.steps] == [1, 2]
    assert r.steps[1].record.episode_id == "scripted" and r.steps[1].record.metadata["instruction"] == "Scroll down"
    assert r.header.agent.attn_implementation == "eager"
    assert (r.header.agent.min_pixels, r.header.agent.max_pixels) == (28 * 28 * 4, 28 * 28 * 64)
    (tmp_path / "bad.json").write_text(json.dumps([{"screenshot": "missing.png"}]))
    assert main(["--model", str(mdir), "--episode", str(tmp_path / "bad.json"), "--out", str(out)]) == 1
