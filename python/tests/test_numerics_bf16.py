"""bf16-reference numerics (docs/algorithms.md §1.5, §12): the recorder's bf16 dtype flow, and
`starkv replay` in bf16-reference numerics against torch mirrors of the reference policies run in
bf16 on the CPU, on the fields recorded in the same run. Judged by the exact-match share of kept
sets per (policy, budget, step, layer, head).

The mirrors restate the reference code (GUI-KV `SnapKVCluster` / `PyramidKVCluster` /
`VLCacheCluster` and the VL-Cache budget pass) from the recorded window sums on: `F.avg_pool1d` on
the bf16 tensor, then a top-k that breaks ties at the K-th score the way CUDA's `torch.topk` does
(lower position first; `aten/src/ATen/native/cuda/TensorTopK.cu` `gatherTopK`), emulated on the
CPU with a stable sort."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import starkv, starkv_bin
from starkv_recorder import Recorder, TraceReader
from starkv_recorder.fields import compute_layer_fields, reference_window_sums

BUDGETS = (5, 10, 20, 40)   # 5 % puts VL-Cache layers on the fallback path


def is_bf16(a: np.ndarray) -> bool:
    return bool(np.all((a.astype(np.float32).view(np.uint32) & 0xFFFF) == 0))


def test_bf16_flow_rounds_probabilities_before_the_window_sum():
    g = torch.Generator().manual_seed(0)
    H, Hkv, L, d = 4, 2, 40, 16
    q = torch.randn(H, L, d, generator=g) * 2
    k = torch.randn(Hkv, L, d, generator=g) * 2
    spans = [(4, 20)]
    ref = compute_layer_fields(q, k, None, spans, 30, fields=["win_sum", "colsum_postvis"], window_sizes=(4, 8),
                               numerics="bf16-reference")
    fp = compute_layer_fields(q, k, None, spans, 30, fields=["win_sum", "colsum_postvis"], window_sizes=(4, 8))
    assert is_bf16(ref["win_sum"]) and is_bf16(ref["colsum_postvis"])
    assert not is_bf16(fp["win_sum"])
    # Window 8 of KV group 1 = the reference expression on its query heads 2..3.
    direct = reference_window_sums(q[2:4], k[1], 8).float().numpy()
    assert np.array_equal(ref["win_sum"][1, 2:4], direct)
    # The post-vision sums are the same expression over the rows e* = 30 .. L-1.
    assert np.array_equal(ref["colsum_postvis"][0:2], reference_window_sums(q[0:2], k[0], L - 30).float().numpy())
    # bf16 logits and probabilities move the sums a little; they still measure the same thing.
    assert np.corrcoef(ref["win_sum"].ravel(), fp["win_sum"].ravel())[0, 1] > 0.99
    assert not np.array_equal(ref["win_sum"], fp["win_sum"])


# ---- mirrors of the reference policies (bf16, CPU) --------------------------------------------

def cuda_topk(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Indices of the k largest per row, ties at the K-th value to the lower index (CUDA rule)."""
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices[..., :k]
    return [sorted(r) for r in order.tolist()]


def pooled(win_row_bf16: torch.Tensor, past: int) -> torch.Tensor:
    return F.avg_pool1d(win_row_bf16[:, :past].unsqueeze(0), kernel_size=5, padding=2, stride=1)[0]


def snapkv_mirror(win_sum, windows, L, budget, num_layers, layer, pyramid=False):
    C = int(L * (budget / 100))
    w = max(1, min(8, C - 2))
    attn = torch.from_numpy(win_sum[windows.index(w)]).to(torch.bfloat16)       # exact: bf16 values
    past = L - w
    if pyramid:
        beta = 20
        mn = (C - w) // beta
        mx = (C - w) * 2 - mn
        if mx >= L - w:
            mx = L - w
            mn = (C - w) * 2 - mx
        steps = (mx - mn) // (num_layers - 1)
        k = C - w if L < (C - w) * 2 else mx - layer * steps
    else:
        k = C - w
    sel = cuda_topk(pooled(attn, past), min(k, past))
    return [r + list(range(past, L)) for r in sel], pooled(attn, past), k


def guikv_mirror(win_sum, windows, hid_norm, spans, resid, L, budget, n_kv, alpha=2.0, temperature=3.5):
    """`GUIKVCluster.update_kv` (GUI-KV repo) after the window sum, on bf16 tensors: pooling, the
    hidden-norm boost on the current image, the residual zeroing of previous-image tokens (the
    smallest residuals, ties to the lower position), top-(C - w) per query head."""
    C = int(L * (budget / 100))
    w = max(1, min(8, C - 2))
    past = L - w
    cache = pooled(torch.from_numpy(win_sum[windows.index(w)]).to(torch.bfloat16), past).unsqueeze(0)
    s, e = spans[-1]
    off = sum(b - a for a, b in spans[:-1])
    scores = torch.from_numpy(hid_norm[off:off + (e - s)]).to(torch.bfloat16)
    standardized = (scores - scores.mean()) / (scores.std() + 1e-8)
    normalized = torch.softmax(standardized / temperature, dim=0)
    cache[:, :, s:e] += normalized.unsqueeze(0).unsqueeze(1) * alpha
    if len(spans) > 1:
        prev = torch.cat([torch.arange(a, b) for a, b in spans[:-1]])
        zero = int((1.0 - float(C / L)) * len(prev))
        H = cache.shape[1]
        G = H // n_kv
        if zero > 0:
            for g in range(n_kv):
                order = torch.sort(torch.from_numpy(resid[g]), stable=True).indices[:zero]
                for h in range(g * G, (g + 1) * G):
                    cache[0, h, prev[order]] = 0
    sel = cuda_topk(cache[0], C - w)
    return [r + list(range(past, L)) for r in sel]


def vlcache_budgets(counts, valid, L, budget, n_layers):
    """The reference's budget pass: per-head sparsity as a float32 mean read back as a Python
    float, torch.tensor (float32), layer mean, Z, betas, `(int(L*b/100)*N_l*betas).int()`."""
    gammas = []
    for layer in range(n_layers):
        inv = np.float32(1) / np.float32(valid[layer])
        per_head = [1.0 - float(np.float32(c) * inv) for c in counts[layer]]
        gammas.append(torch.tensor(per_head).mean().item())
    gam = torch.tensor(gammas)
    Z = (1 - gam).sum()
    betas = torch.clamp((1 - gam) / Z, min=0.001, max=1.0)
    return (int(L * (budget / 100)) * n_layers * betas).int().tolist()


def vlcache_mirror(colsum_pv, win_sum, windows, win_rows, L, e_star, budget_l):
    """`VLCacheCluster.update_kv` from the recorded fields: the post-vision window, or (budget ≤
    window) capacity 1 with the sums of the last budget − 1 rows (the recorded window sums when
    that window was recorded, else the bf16 rows summed in bf16)."""
    assert budget_l >= 0, "degenerate sparsity (the reference's budgets are NaN)"
    win = L - e_star
    if budget_l >= L:
        return None, False
    if budget_l > win:
        past, k = L - win, budget_l - win
        attn = torch.from_numpy(colsum_pv).to(torch.bfloat16)
    else:
        win, k = budget_l - 1, 1
        assert win >= 1
        past = L - win
        if win in windows:
            attn = torch.from_numpy(win_sum[windows.index(win)]).to(torch.bfloat16)
        else:
            W = win_rows.shape[1]
            assert win <= W, "the fallback window is longer than the recorded rows"
            attn = torch.from_numpy(win_rows[:, W - win:].astype(np.float32)).to(torch.bfloat16).sum(dim=1)
    sel = cuda_topk(pooled(attn, past), k)
    return [r + list(range(past, L)) for r in sel], budget_l <= L - e_star


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset or names no executable (make test-python builds starkv and sets it)")
    from conftest import episode_inputs
    from starkv_recorder.tiny import tiny_model, tiny_processor
    processor = tiny_processor(max_pixels=28 * 28 * 256)
    model = tiny_model(processor, attn_implementation="sdpa")
    # Random weights attend almost uniformly (no entry above VL-Cache's 0.01 threshold); sharper
    # queries give the peaked attention real models have.
    from starkv_recorder.recorder import find_attention_layers
    with torch.no_grad():
        for attn in find_attention_layers(model):
            attn.q_proj.weight.mul_(48.0)
            attn.q_proj.bias.mul_(48.0)
    model = model.to(torch.bfloat16)
    sizes = ((448, 336), (336, 448), (448, 336))          # 192 visual tokens each (> 144)
    steps = [episode_inputs(processor, n, seed=n, sizes=sizes) for n in (1, 2, 3)]
    tmp = tmp_path_factory.mktemp("bf16")
    path = tmp / "bf16.starkv"
    with Recorder(path, model, processor, fields="full", win_rows_max=32, episode_id="ep",
                  numerics="bf16-reference") as rec:
        for inputs, images in steps:
            rec.next_step(original_sizes=[im.size for im in images])
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
    dumps = {}
    for numerics in ("bf16-reference", "fp32"):
        dump = tmp / f"kept-{numerics}.jsonl"
        starkv("replay", str(path), "--policies", "snapkv,pyramidkv,vlcache,guikv", "--budgets", ",".join(map(str, BUDGETS)),
               "--numerics", numerics, "--dump-kept", str(dump), "--out", str(tmp / f"out-{numerics}"), "--quiet")
        recs = {}
        for line in dump.read_text().splitlines():
            r = json.loads(line)
            recs[(r["policy"], r["budget"], r["step"], r["layer"])] = r
        dumps[numerics] = recs
    return path, dumps


def test_header_records_the_numerics(bf16_run):
    path, _ = bf16_run
    r = TraceReader(path)
    assert r.header.numerics == "bf16-reference"
    ws = r.tensor(0, "win_sum", 0)
    assert is_bf16(ws) and r.steps[0].record.prompt_length > 200


def test_bf16_replay_matches_torch_mirrors_bit_for_bit(bf16_run):
    path, dumps = bf16_run
    r = TraceReader(path)
    windows = list(r.header.window_sizes)
    n_layers = r.header.model.num_layers
    stats = {}          # (policy, numerics) -> [matches, total]
    ties = 0
    fallbacks = 0
    for pos, entry in enumerate(r.steps):
        rec = entry.record
        L = rec.prompt_length
        e_star = rec.images[-1].span_end
        counts = [r.tensor(pos, "count_gt_001", layer).tolist() for layer in range(n_layers)]
        valid = [int(r.tensor(pos, "n_valid", layer)[0]) for layer in range(n_layers)]
        for b in BUDGETS:
            vl_budgets = vlcache_budgets(counts, valid, L, b, n_layers)
            for layer in range(n_layers):
                win_sum = r.tensor(pos, "win_sum", layer)
                expected = {}
                for policy, pyr in (("snapkv", False), ("pyramidkv", True)):
                    kept, scores, k = snapkv_mirror(win_sum, windows, L, b, n_layers, layer, pyramid=pyr)
                    expected[policy] = kept
                    if policy == "snapkv":
                        srt = torch.sort(scores.float(), dim=-1, descending=True).values
                        ties += int(((srt[:, k - 1] == srt[:, k]) if k < srt.shape[1] else torch.zeros(1, dtype=torch.bool)).sum())
                spans = [(im.span_start, im.span_end) for im in rec.images]
                resid = r.tensor(pos, "guikv_resid", layer) if len(spans) > 1 else None
                expected["guikv"] = guikv_mirror(win_sum, windows, r.tensor(pos, "hid_norm", layer), spans, resid, L, b,
                                                 r.header.model.num_kv_heads)
                vl, fell_back = vlcache_mirror(r.tensor(pos, "colsum_postvis", layer), win_sum, windows,
                                               r.tensor(pos, "win_rows", layer), L, e_star, vl_budgets[layer])
                fallbacks += int(fell_back)
                if vl is not None:
                    expected["vlcache"] = vl
                for numerics, recs in dumps.items():
                    for policy, rows in expected.items():
                        got = recs[(policy, f"{b}%", rec.step_index, layer)]
                        if policy == "vlcache":
                            assert got["capacity"] == vl_budgets[layer], (numerics, pos, layer, b)
                        s = stats.setdefault((policy, numerics), [0, 0])
                        for h, row in enumerate(rows):
                            s[0] += int(got["kept"][h] == row)
                            s[1] += 1
    print({k: f"{m}/{t}" for k, (m, t) in stats.items()}, "ties at the K-th score:", ties, "vlcache fallbacks:", fallbacks)
    assert ties > 0, "no ties at the K-th score: the comparison would not exercise the tie rule"
    assert fallbacks > 0, "no VL-Cache layer took the budget - 1 fallback"
    for policy in ("snapkv", "pyramidkv", "vlcache", "guikv"):
        m, t = stats[(policy, "bf16-reference")]
        assert t > 0 and m == t, f"{policy}: {m}/{t} kept sets equal the bf16 mirror"
