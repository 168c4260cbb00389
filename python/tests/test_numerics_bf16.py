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
STEP_IMAGES = (1, 2, 3, 2, 3, 3, 3)
REPLAY_POLICIES = ("snapkv", "pyramidkv", "vlcache", "guikv", "starkv(preset=screenspot-pro)",
                   "starkv(preset=agentnetbench)", "adakv", "adakv(normalize=on)", "snapkv-kvpress", "h2o", "streamingllm", "full")


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
    # H2O's column sums over all L rows: the same expression with the window = the whole prompt.
    cols = compute_layer_fields(q, k, None, spans, 30, fields=["colsum_all"], numerics="bf16-reference",
                                chunk_rows=16)
    assert is_bf16(cols["colsum_all"])
    assert np.array_equal(cols["colsum_all"][2:4], reference_window_sums(q[2:4], k[1], L).float().numpy())
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




# ---- STaR-KV (kawhiiiileo/STaR-KV starkv/*.py) in bf16, as a CUDA run computes it -------------
# Every tensor op of the reference is restated explicitly as CUDA evaluates it on bf16 tensors:
# operands converted to fp32 ("opmath"), the op in fp32, one rounding to bf16 (`bf`). Python-float
# scalars enter as fp32. Reductions: `mean(dim=0)` = fp32 sum in head order times fl(1/N)
# (aten/src/ATen/native/cuda/ReduceMomentKernel.cu `mean_kernel_impl`); long sums accumulate in
# fp64 and round to fp32, then bf16. exp/log/pow are evaluated correctly rounded to fp32 (via
# fp64). `** (1/T)` casts the exponent to bf16 first (aten/src/ATen/native/cuda/PowKernel.cu
# `exp_scalar.to<scalar_t>()`, Pow.cuh `pow_(BFloat16, BFloat16)` = std::pow on floats). numpy's
# unstable argsort in `strict_mi_score_2d` is replaced by a stable one (ties to the lower index).

def bf(x: torch.Tensor) -> torch.Tensor:
    """One rounding of an fp32 tensor to bf16, kept as fp32 values."""
    return x.float().to(torch.bfloat16).float()


def f32(s: float) -> torch.Tensor:
    return torch.tensor(s, dtype=torch.float64).float()


def cuda_mean_rows(rows: torch.Tensor) -> torch.Tensor:
    acc = torch.zeros_like(rows[0], dtype=torch.float32)
    for r in rows:
        acc = acc + r.float()
    return bf(acc * (torch.tensor(1.0, dtype=torch.float32) / rows.shape[0]))


def long_sum(x: torch.Tensor) -> torch.Tensor:
    return bf(x.double().sum().float())


def fexp(x):
    return torch.exp(x.double()).float()


def flog(x):
    return torch.log(x.double()).float()


def boost_bf16(norms: np.ndarray, alpha: float, temperature: float) -> torch.Tensor:
    """`apply_starkv_spatial_to_attn_cache` / GUI-KV's boost on bf16 norms (the torch bf16 ops,
    as in guikv_mirror)."""
    scores = torch.from_numpy(norms).to(torch.bfloat16)
    standardized = (scores - scores.mean()) / (scores.std() + 1e-8)
    return torch.softmax(standardized / temperature, dim=0) * alpha


def mi_reference_stable(p_norm: np.ndarray, v_len: int) -> float:
    """`vision_grid_shape` + `strict_mi_score_2d` (12×12 cells, 16 value bins) with a stable argsort."""
    gh = max(1, int(round(math.sqrt(float(v_len)))))
    gw = max(1, (v_len + gh - 1) // gh)
    rows = np.array([min(11, max(0, math.floor((o // gw + 0.5) / gh * 12))) for o in range(v_len)])
    cols = np.array([min(11, max(0, math.floor((o % gw + 0.5) / gw * 12))) for o in range(v_len)])
    n = p_norm.size
    if n <= 1:
        return 0.0
    y_bins = rows * 12 + cols
    if np.unique(y_bins).size <= 1:
        return 0.0
    order = np.argsort(p_norm, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(n)
    a_bins = np.clip(np.floor(rank.astype(np.float64) * 16 / float(n)).astype(np.int64), 0, 15)
    if np.unique(a_bins).size <= 1:
        return 0.0
    joint = np.zeros((16, 144))
    for a, y in zip(a_bins, y_bins):
        joint[a, y] += 1.0
    joint = joint / joint.sum()
    pa = joint.sum(axis=1, keepdims=True)
    pa = pa / pa.sum()
    py = joint.sum(axis=0, keepdims=True)
    py = py / py.sum()
    return max(0.0, float(np.sum(joint * (np.log(joint + 1e-12) - np.log(pa @ py + 1e-12)))))


STARKV_PRESETS = {   # T_min, T_max (docs/algorithms.md §2.5); both: N_prof 5, R 10, temporal and AEB on
    "screenspot-pro": (0.75, 1.25),
    "agentnetbench": (0.95, 1.05),
}


class StarkvMirror:
    """`STARKVGroupCluster.update_kv` with its per-layer state, one instance per (preset, budget)."""

    def __init__(self, preset, n_layers, n_kv):
        self.t_min, self.t_max = STARKV_PRESETS[preset]
        self.n_prof, self.ramp, self.lam, self.decay, self.tau = 5, 10, 0.5, 0.9, 1.0
        self.rho, self.delta = 0.9, 0.1
        self.n_kv = n_kv
        self.layers = [dict() for _ in range(n_layers)]
        self.active_steps = 0     # (step, layer) cells with λ_eff > 0
        self.mi_tied_values = 0   # values that tie with another in the MI ranks (the stable rule decides)

    def reset(self):
        for st in self.layers:
            st.clear()

    def temperature(self, base):
        s = long_sum(base)
        p = bf(base / torch.clamp(s, min=1e-8))
        terms = bf(p * bf(flog(bf(p + f32(1e-8)))))
        ent = -long_sum(terms)
        ne = bf(ent / f32(math.log(max(1, base.numel())) + 1e-8))
        return float(bf(f32(self.t_min) + bf(f32(self.t_max - self.t_min) * ne)))

    def weights(self, mi):
        mn, mx = mi.min(), mi.max()
        rng = bf(mx - mn)
        s = torch.full_like(mi, 0.5) if float(rng) < 1e-12 else bf(bf(mi - mn) / rng)
        s = bf(s / f32(max(self.tau, 1e-6)))
        e = fexp(s - s.max())
        tot = torch.zeros((), dtype=torch.float32)
        for v in e:
            tot = tot + v
        w = bf(e / tot)
        return bf(w / torch.clamp(long_sum(w), min=1e-8))

    def layer(self, layer, win_sum, windows, hid_norm, images, L, budget):
        st = self.layers[layer]
        st["tstep"] = st.get("tstep", 0) + 1
        C = int(L * (budget / 100))
        w = max(1, min(8, C - 2))
        past = L - w
        attn = pooled(torch.from_numpy(win_sum[windows.index(w)]).to(torch.bfloat16), past)      # bf16 [H, P]
        spans = []
        for i, (s, e) in enumerate(images):
            s2, e2 = max(0, min(s, past)), max(max(0, min(s, past)), min(e, past))
            if e2 > s2:
                spans.append((s2, e2, i))
        cur = spans[-1]
        vs, ve, ci = cur
        off = sum(e - s for s, e in images[:ci]) + (vs - images[ci][0])
        attn[:, vs:ve] += boost_bf16(hid_norm[off:off + (ve - vs)], 2.0, 3.5).unsqueeze(0)
        ac = attn.float()
        H = ac.shape[0]
        G = H // self.n_kv
        base = cuda_mean_rows(ac)
        S = torch.stack([cuda_mean_rows(ac[g * G:(g + 1) * G]) for g in range(self.n_kv)])
        T = self.temperature(base)
        # online_mi_prior
        st["pstep"] = st.get("pstep", 0) + 1
        vis = S[:, vs:ve]
        mi = []
        for g in range(self.n_kv):
            p = vis[g].clamp_min(0)
            if float(p.sum()) <= 1e-12:
                mi.append(0.0)
                continue
            pn = (p / p.sum()).numpy()
            self.mi_tied_values += pn.size - np.unique(pn).size
            mi.append(mi_reference_stable(pn, ve - vs))
        mi = bf(torch.tensor(mi, dtype=torch.float64).float())
        if "mi" in st:
            mi = bf(bf(f32(self.decay) * st["mi"]) + bf(f32(1.0 - self.decay) * mi))
        st["mi"] = mi
        lam = 0.0 if st["pstep"] <= self.n_prof else self.lam * min(1.0, float(st["pstep"] - self.n_prof) / float(self.ramp))
        self.active_steps += int(lam > 0)
        wg = self.weights(mi)
        g_star = torch.argmax(S, dim=0)         # first maximum on ties
        w_star = bf(wg[g_star] * f32(float(self.n_kv)))
        scaled = bf(base * bf(f32(1.0 - lam) + bf(f32(lam) * w_star)))
        # temporal_apply_to_scaled
        if len(spans) > 1:
            a = S[:, vs:ve].clamp_min(0)
            den = torch.stack([long_sum(r) for r in a]).clamp_min(1e-8).unsqueeze(1)
            a = bf(a / den)
            if "pat" in st and st["pat"].shape == a.shape:
                m = bf(bf(f32(self.rho) * st["pat"]) + bf(f32(1.0 - self.rho) * a))
            else:
                m = a
            st["pat"] = m
            n1 = torch.stack([bf(r.double().square().sum().sqrt().float()) for r in a]).clamp_min(1e-8).unsqueeze(1)
            n2 = torch.stack([bf(r.double().square().sum().sqrt().float()) for r in m]).clamp_min(1e-8).unsqueeze(1)
            prod = bf(bf(a / n1) * bf(m / n2))
            stab = torch.stack([long_sum(r) for r in prod]).clamp(0.0, 1.0)
            delta = torch.zeros(past)
            for i, (s, e, _) in enumerate(spans):
                delta[s:e] = float(max(0, len(spans) - 1 - i))
            phi = bf(f32(0.0) + bf(f32(1.0) * stab[g_star]))
            raw = bf(fexp(bf(bf(f32(-self.delta) * delta) * phi)))
            D = bf(f32(0.0) + bf(f32(1.0) * raw))
            scaled = bf(scaled * D)                      # warmup 0: τ ≥ 1 > 0
        e = float(bf(f32(1.0 / T)))
        scaled = bf(scaled.clamp(min=0.0).double().pow(e).float())
        k = int(max(1, min(C - w, past)))
        sel = cuda_topk(scaled.unsqueeze(0), k)[0]
        return sel + list(range(past, L))


# ---- AdaKV, kvpress SnapKV, H2O, StreamingLLM, full ---------------------------------------------

def adakv_mirror(win_sum, windows, L, budget, n_kv, floor=0.2, normalize=False):
    """KVCache-Factory `AdaKVCluster` (w = 8, max pooling k = 7) with GQA group-mean scores:
    bf16 window mean (= bf16 sum · 1/8 exactly), max pooling, CUDA group means, per-head sort,
    global top-(H_kv·B0) (ties to the lower flattened position), capacities
    `round(n_h·(1 − f) + ⌊f·B0⌋)` in float32, per-head top-cap (ties to the lower position)."""
    C = int(L * (budget / 100))
    w = max(1, min(8, C - 2))
    past, b0 = L - w, C - w
    if C > L or b0 > past:
        return None
    mean = bf(torch.from_numpy(win_sum[windows.index(w)][:, :past]).float() * (torch.tensor(1.0) / w))
    pooled = F.max_pool1d(mean.to(torch.bfloat16).unsqueeze(0), kernel_size=7, padding=3, stride=1)[0].float()
    G = pooled.shape[0] // n_kv
    scores = torch.stack([cuda_mean_rows(pooled[g * G:(g + 1) * G]) for g in range(n_kv)])
    srt = torch.sort(scores, dim=-1, descending=True).values
    if normalize:   # ratio = top-B0 sum / total sum (bf16 sums, bf16 quotient), bf16 product
        ratio = torch.stack([bf(long_sum(r[:b0]) / long_sum(r)) for r in srt]).unsqueeze(1)
        srt = bf(srt * ratio)
    flat = srt.reshape(-1)
    chosen = torch.sort(flat, descending=True, stable=True).indices[:n_kv * b0] // past
    counts = torch.bincount(chosen, minlength=n_kv)
    caps = torch.round(counts * (1 - floor) + int(b0 * floor)).int().tolist()
    return [cuda_topk(scores[g:g + 1], min(past, caps[g]))[0] + list(range(past, L)) for g in range(n_kv)]


def kvpress_snapkv_mirror(win_sum, windows, L, budget, n_kv, window=64):
    """kvpress `SnapKVPress.score` + `ScorerPress` top-k: bf16 window mean (= bf16 sum · 1/64
    exactly), bf16 avg pooling, CUDA group means, the window padded with the maximum score,
    top-C per KV head over all L positions (ties to the lower position)."""
    C = int(L * (budget / 100))
    w = min(window, L)
    past = L - w
    if C >= L:
        return None
    mean = bf(torch.from_numpy(win_sum[windows.index(w)][:, :past]).float() * (torch.tensor(1.0) / w))
    pooled = F.avg_pool1d(mean.to(torch.bfloat16).unsqueeze(0), kernel_size=5, padding=2, stride=1)[0].float()
    G = pooled.shape[0] // n_kv
    scores = torch.stack([cuda_mean_rows(pooled[g * G:(g + 1) * G]) for g in range(n_kv)])
    # `F.pad(scores, (0, w), value=scores.max().item())`, then `topk(n_kept)` over all L positions.
    padded = torch.cat([scores, torch.full((n_kv, w), float(scores.max()))], dim=1)
    return cuda_topk(padded, C)


def h2o_mirror(colsum_all, L, budget):
    """KVCache-Factory `H2OKVCluster`: bf16 column sums over all rows (recorded in that flow),
    no pooling, top-(C − w) per query head plus the last w (w = 8, clamped to C − 2)."""
    C = int(L * (budget / 100))
    w = max(1, min(8, C - 2))
    past = L - w
    sums = torch.from_numpy(colsum_all[:, :past]).to(torch.bfloat16).float()
    return [r + list(range(past, L)) for r in cuda_topk(sums, min(C - w, past))]


def streamingllm_mirror(L, budget, sinks=4):
    C = int(L * (budget / 100))
    if C >= L:
        return [list(range(L))]
    s = min(sinks, C)
    return [list(range(s)) + list(range(L - (C - s), L))]


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
    # One episode of 7 steps: STaR-KV's presets profile MI for N_prof = 5 steps, so λ_eff > 0 on
    # steps 6 and 7; 2-3 screenshots on most steps exercise the temporal discount.
    steps = [episode_inputs(processor, n, seed=i, sizes=sizes) for i, n in enumerate(STEP_IMAGES)]
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
        starkv("replay", str(path), "--policies", ",".join(REPLAY_POLICIES), "--budgets", ",".join(map(str, BUDGETS)),
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


def test_bf16_replay_matches_torch_mirrors_for_starkv_adakv_kvpress_h2o(bf16_run):
    """STaR-KV (screenspot-pro and agentnetbench presets: boost, means, AEB, MI with λ_eff > 0 on
    the last steps, temporal discount, power), AdaKV, kvpress SnapKV, H2O, StreamingLLM and full:
    every kept set of the bf16-reference replay equals the bf16 mirror's."""
    path, dumps = bf16_run
    r = TraceReader(path)
    windows = list(r.header.window_sizes)
    n_layers = r.header.model.num_layers
    n_kv = r.header.model.num_kv_heads
    presets = ("screenspot-pro", "agentnetbench")
    mirrors = {(p, b): StarkvMirror(p, n_layers, n_kv) for p in presets for b in BUDGETS}
    stats = {}          # (policy, numerics) -> [matches, total]
    multi_image_steps = 0
    for pos, entry in enumerate(r.steps):
        rec = entry.record
        L = rec.prompt_length
        images = [(im.span_start, im.span_end) for im in rec.images]
        multi_image_steps += int(len(images) > 1)
        if rec.reset:
            for mm in mirrors.values():
                mm.reset()
        for b in BUDGETS:
            for layer in range(n_layers):
                win_sum = r.tensor(pos, "win_sum", layer)
                expected = {}
                for p in presets:
                    expected[f"starkv(preset={p})"] = [mirrors[(p, b)].layer(
                        layer, win_sum, windows, r.tensor(pos, "hid_norm", layer), images, L, b)]
                for label, norm in (("adakv", False), ("adakv(normalize=on)", True)):
                    ada = adakv_mirror(win_sum, windows, L, b, n_kv, normalize=norm)
                    if ada is not None:
                        expected[label] = ada
                kvp = kvpress_snapkv_mirror(win_sum, windows, L, b, n_kv)
                if kvp is not None:
                    expected["snapkv-kvpress"] = kvp
                expected["h2o"] = h2o_mirror(r.tensor(pos, "colsum_all", layer), L, b)
                expected["streamingllm"] = streamingllm_mirror(L, b)
                expected["full"] = [list(range(L))]
                for numerics, recs in dumps.items():
                    for policy, rows in expected.items():
                        # the full cache runs once, under the budget label 100%
                        got = recs[(policy, "100%" if policy == "full" else f"{b}%", rec.step_index, layer)]
                        assert len(got["kept"]) == len(rows), (policy, numerics, pos, layer, b)
                        s = stats.setdefault((policy, numerics), [0, 0])
                        for h, row in enumerate(rows):
                            s[0] += int(got["kept"][h] == row)
                            s[1] += 1
    active = {k: m.active_steps for k, m in mirrors.items()}
    print({k: f"{m}/{t}" for k, (m, t) in sorted(stats.items())}, "MI-active (step, layer) cells:", active)
    ties = sum(m.mi_tied_values for m in mirrors.values())
    print("tied values in the MI ranks:", ties)
    assert all(v > 0 for v in active.values()), "the MI prior never became active (λ_eff > 0)"
    assert ties > 0, "no ties in the MI ranks: the comparison would not exercise the stable tie rule"
    assert multi_image_steps >= 2, "the temporal discount needs steps with two or more screenshots"
    for policy in ("starkv(preset=screenspot-pro)", "starkv(preset=agentnetbench)", "adakv", "adakv(normalize=on)", "snapkv-kvpress",
                   "h2o", "streamingllm", "full"):
        m, t = stats[(policy, "bf16-reference")]
        assert t > 0 and m == t, f"{policy}: {m}/{t} kept sets equal the bf16 mirror"
    # The bf16 flow matters: in fp32 numerics STaR-KV's kept sets differ from the mirror somewhere.
    m, t = stats[("starkv(preset=screenspot-pro)", "fp32")]
    assert m < t


def test_mirror_ops_equal_the_reference_expressions_run_in_bf16():
    """The mirror writes each STaR-KV bf16 op out in its CUDA form; on random bf16 inputs the
    reference's own expressions (starkv_aeb.py, starkv_mi.py, starkv_temporal.py), run on bf16
    tensors, give the same values — so the mirror restates the reference, not a variant of it."""
    g = torch.Generator().manual_seed(0)
    m = StarkvMirror("screenspot-pro", 1, 4)
    for _ in range(50):
        P = 300
        base = (torch.rand(P, generator=g) ** 6 * 0.05).to(torch.bfloat16)
        # compute_entropy_temperature
        score = base.unsqueeze(0)
        p = score / score.sum(-1, keepdim=True).clamp_min(1e-8)
        ent = -(p * torch.log(p + 1e-8)).sum(-1)
        t = 0.75 + (1.25 - 0.75) * (ent / (math.log(P) + 1e-8))
        assert t.mean().item() == m.temperature(base.float())
        # mi_to_group_weights
        mi = (torch.rand(4, generator=g) * 0.5).to(torch.bfloat16)
        s = (mi - mi.min()) / (mi.max() - mi.min())
        w = torch.softmax(s / 1.0, dim=0)
        assert torch.equal((w / w.sum().clamp_min(1e-8)).float(), m.weights(mi.float()))
        # F.cosine_similarity of the pattern and its EMA
        a = torch.rand(4, 50, generator=g).to(torch.bfloat16)
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-8)
        b = torch.rand(4, 50, generator=g).to(torch.bfloat16)
        b = b / b.sum(-1, keepdim=True)
        cos = F.cosine_similarity(a, b, dim=-1, eps=1e-8).clamp(0.0, 1.0)
        n1 = torch.stack([bf(r.double().square().sum().sqrt().float()) for r in a.float()]).unsqueeze(1)
        n2 = torch.stack([bf(r.double().square().sum().sqrt().float()) for r in b.float()]).unsqueeze(1)
        mine = torch.stack([long_sum(r) for r in bf(bf(a.float() / n1) * bf(b.float() / n2))]).clamp(0.0, 1.0)
        assert torch.equal(cos.float(), mine)
        # ac.mean(dim=0) over heads
        x = (torch.rand(4, 100, generator=g) * 0.05).to(torch.bfloat16)
        assert torch.equal(x.mean(dim=0).float(), cuda_mean_rows(x.float()))
