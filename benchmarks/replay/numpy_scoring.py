"""SnapKV and STaR-KV scoring in NumPy, on the fields of a StarKV trace.

This is the comparison point of the replay benchmark (benchmarks/replay/README.md): the same
selection rules as Sources/StarKVPolicies/Policies/SnapKVPolicy.swift and StarKVPolicy.swift
(docs/algorithms.md §1.3-1.4, §2.3-2.5, §4.1-4.2), written the way a researcher would
in NumPy: vectorised over heads and tokens, O(n) top-k through `np.partition`.

It reproduces the Swift reduction order where it decides a selection (fp32 pooling left to
right, fp64 head and group sums in head order, sequential sums through `np.cumsum`), so kept
sets agree with `starkv replay --dump-kept`: SnapKV exactly; STaR-KV up to last-bit
differences of `exp`/`log`/`pow` between NumPy and glibc, which can reorder near-ties.
python/tests/test_numpy_scoring.py checks both on the shipped sample trace.

Only the defaults the benchmark runs are covered: SnapKV w=8, k=5 avgpool; STaR-KV preset
`agentnetbench` (spatial boost, MI prior on the pseudo-grid, temporal discount, AEB power
sharpening, fixed per-layer budget).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


# ---- shared primitives (docs/algorithms.md §1.3-1.4) ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """C = floor(L*b/100) in fp64, w_eff = min(L, max(1, min(w, C-2))), P = L - w_eff."""
    prompt_length: int
    capacity: int
    window: int

    @staticmethod
    def make(prompt_length: int, budget_percent: float, window: int) -> "BudgetPlan":
        c = int(math.floor(float(prompt_length) * budget_percent / 100))
        w = min(prompt_length, max(1, min(window, c - 2)))
        return BudgetPlan(prompt_length, c, w)

    @property
    def past(self) -> int:
        return self.prompt_length - self.window

    @property
    def compresses(self) -> bool:
        return self.prompt_length >= self.capacity


def seqsum(x: np.ndarray) -> float:
    """Left-to-right sum (the order the Swift loops use), not NumPy's pairwise sum."""
    return float(np.cumsum(x, dtype=np.float64)[-1]) if x.size else 0.0


def avg_pool(rows: np.ndarray, kernel: int) -> np.ndarray:
    """avg_pool1d, stride 1, padding k//2 counted in the divisor; fp32 sums left to right."""
    if kernel <= 1 or rows.shape[-1] == 0:
        return rows
    n = rows.shape[-1]
    half = kernel // 2
    padded = np.zeros(rows.shape[:-1] + (n + kernel - 1,), dtype=np.float32)
    padded[..., half:half + n] = rows
    acc = padded[..., 0:n].copy()
    for i in range(1, kernel):
        acc += padded[..., i:i + n]
    return acc / np.float32(kernel)


def topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest scores of every row, ties broken by lower position."""
    n = scores.shape[-1]
    if k >= n:
        return np.ones(scores.shape, dtype=bool)
    if k <= 0:
        return np.zeros(scores.shape, dtype=bool)
    s = np.where(np.isnan(scores), -np.inf, scores)
    threshold = -np.partition(-s, k - 1, axis=-1)[..., k - 1:k]
    greater = s > threshold
    ties = s == threshold
    need = k - greater.sum(axis=-1, keepdims=True)
    return greater | (ties & (np.cumsum(ties, axis=-1) <= need))


def kept_rows(mask: np.ndarray, plan: BudgetPlan) -> list[np.ndarray]:
    """Ascending kept positions per row: the selected past plus the window [P, L)."""
    window = np.arange(plan.past, plan.prompt_length, dtype=np.int64)
    return [np.concatenate([np.flatnonzero(row), window]) for row in np.atleast_2d(mask)]


def window_rows(win_sum: np.ndarray, window_sizes: list[int], window: int, past: int) -> np.ndarray:
    """win_sum[k(window), :, :past] as fp32 [H, P]."""
    return win_sum[window_sizes.index(window), :, :past].astype(np.float32)


# ---- SnapKV (docs/algorithms.md §4.1-4.2; GUI-KV repo SnapKVCluster) ------------------------------

def snapkv_layer(win_sum: np.ndarray, window_sizes: list[int], prompt_length: int,
                 budget_percent: float, window: int = 8, kernel: int = 5) -> list[np.ndarray]:
    """Kept positions of one layer, one row per query head."""
    plan = BudgetPlan.make(prompt_length, budget_percent, window)
    heads = win_sum.shape[1]
    if not plan.compresses:
        return [np.arange(prompt_length, dtype=np.int64)] * heads
    k = min(plan.capacity - plan.window, plan.past)
    pooled = avg_pool(window_rows(win_sum, window_sizes, plan.window, plan.past), kernel)
    return kept_rows(topk_mask(pooled, k), plan)


# ---- STaR-KV (docs/algorithms.md §2.3-2.5; kawhiiiileo/STaR-KV STARKVGroupCluster) ------------------

@dataclasses.dataclass
class StarKVConfig:
    """Preset `agentnetbench` (docs/algorithms.md §2.5)."""
    window: int = 8
    kernel: int = 5
    alpha: float = 2.0
    spatial_temperature: float = 3.5
    mi_profile_steps: int = 5
    mi_lambda: float = 0.5
    mi_decay: float = 0.9
    mi_tau: float = 1.0
    mi_ramp_steps: int = 10
    temporal_rho: float = 0.9
    temporal_delta: float = 0.1
    temporal_eps: float = 0.0
    temporal_discount_min: float = 0.0
    temporal_warmup: int = 0
    aeb_min: float = 0.95
    aeb_max: float = 1.05


@dataclasses.dataclass
class StarKVLayerState:
    """Per-layer carried state (docs/algorithms.md §2.2)."""
    temporal_step: int = 0
    profile_step: int = 0
    mi_ema: np.ndarray | None = None
    pattern_ema: np.ndarray | None = None


def spatial_boost(norms: np.ndarray, alpha: float, temperature: float) -> np.ndarray:
    """beta = alpha * softmax(z / T_s), z the Bessel z-score of the hidden-state norms (fp64)."""
    n = norms.size
    x = norms.astype(np.float64)
    mean = seqsum(x) / n
    d = x - mean
    std = math.sqrt(seqsum(d * d) / (n - 1)) if n > 1 else 0.0
    z = (d / (std + 1e-8)) / (temperature if temperature != 0 else 1.0)
    e = np.exp(z - z.max())
    return ((alpha * e) / seqsum(e)).astype(np.float32)


def entropy_temperature(mean: np.ndarray, t_min: float, t_max: float) -> float:
    denom = max(seqsum(mean), 1e-8)
    p = mean / denom
    ent = -seqsum(p * np.log(p + 1e-8))
    norm = ent / (math.log(max(1, mean.size)) + 1e-8)
    return t_min + (t_max - t_min) * norm


def pseudo_grid(v: int) -> tuple[int, int]:
    n = max(1, v)
    gh = max(1, round(math.sqrt(n)))  # Python's round is half-to-even, as the Swift code
    return gh, (n + gh - 1) // gh


def spatial_mutual_information(y: np.ndarray, grid_h: int, grid_w: int) -> float:
    """MI (nats) between 12x12 location cells and 16 equal-frequency attention bins (§2.4)."""
    v = y.size
    if v <= 1:
        return 0.0
    p = np.maximum(y, 0.0)
    total = seqsum(p)
    if total <= 1e-12:
        return 0.0
    p = p / total
    gh, gw = max(1, grid_h), max(1, grid_w)
    u = np.arange(v)
    rb = np.clip(np.floor((u // gw + 0.5) / gh * 12), 0, 11).astype(np.int64)
    cb = np.clip(np.floor((u % gw + 0.5) / gw * 12), 0, 11).astype(np.int64)
    cell = rb * 12 + cb
    if np.all(cell == cell[0]):
        return 0.0
    order = np.argsort(p, kind="stable")
    bins = np.empty(v, dtype=np.int64)
    bins[order] = np.minimum(15, np.arange(v) * 16 // v)
    if np.all(bins == bins[0]):
        return 0.0
    joint = np.bincount(bins * 144 + cell, minlength=16 * 144).astype(np.float64).reshape(16, 144) / v
    pa = np.cumsum(joint, axis=1)[:, -1]
    py = np.cumsum(joint, axis=0)[-1, :]
    sa, sy = seqsum(pa), seqsum(py)
    if sa > 1e-12:
        pa = pa / sa
    if sy > 1e-12:
        py = py / sy
    nz = joint != 0
    terms = joint * (np.log(joint + 1e-12) - np.log(np.outer(pa, py) + 1e-12))
    return max(0.0, seqsum(terms[nz]))


def group_weights(mi: np.ndarray, tau: float) -> np.ndarray:
    lo, hi = mi.min(), mi.max()
    s = np.full(mi.shape, 0.5) if hi - lo < 1e-12 else (mi - lo) / (hi - lo)
    t = max(tau, 1e-6)
    w = np.exp(s / t - (s / t).max())
    w = w / seqsum(w)
    return w / max(seqsum(w), 1e-8)


@dataclasses.dataclass
class Span:
    start: int
    end: int
    image: int


def clipped_spans(images, past: int) -> list[Span]:
    out = []
    for i, img in enumerate(images):
        s = max(0, min(img.span_start, past))
        e = max(s, min(img.span_end, past))
        if e > s:
            out.append(Span(s, e, i))
    return out


class StarKVScorer:
    """STaR-KV over a trajectory: call `step()` once per trace step, in order."""

    def __init__(self, num_layers: int, config: StarKVConfig | None = None):
        self.config = config or StarKVConfig()
        self.layers = [StarKVLayerState() for _ in range(num_layers)]

    def begin_step(self, reset: bool) -> None:
        if reset:
            self.layers = [StarKVLayerState() for _ in self.layers]
        for st in self.layers:
            st.temporal_step += 1

    def score_layer(self, layer: int, win_sum: np.ndarray, hid_norm: np.ndarray, window_sizes: list[int],
                    images, plan: BudgetPlan, kv_heads: int) -> np.ndarray:
        """Final fp64 scores over the past [0, P) of one layer; updates the layer's state."""
        c = self.config
        st = self.layers[layer]
        past = plan.past
        heads = avg_pool(window_rows(win_sum, window_sizes, plan.window, past), c.kernel)
        h = heads.shape[0]
        spans = clipped_spans(images, past)
        cur = spans[-1] if spans else None
        if cur is not None and c.alpha > 0:
            offset = sum(im.span_end - im.span_start for im in images[:cur.image])
            first = offset + (cur.start - images[cur.image].span_start)
            length = cur.end - cur.start
            beta = spatial_boost(hid_norm[first:first + length], c.alpha, c.spatial_temperature)
            heads[:, cur.start:cur.end] += beta
        h64 = heads.astype(np.float64)
        base = h64[0].copy()
        for r in h64[1:]:
            base += r
        base /= h
        g = h // kv_heads
        groups = np.empty((kv_heads, past))
        for grp in range(kv_heads):
            acc = h64[grp * g].copy()
            for r in h64[grp * g + 1:(grp + 1) * g]:
                acc += r
            groups[grp] = acc / g
        temperature = entropy_temperature(base, c.aeb_min, c.aeb_max)
        # Online MI prior (§2.3 step 7).
        st.profile_step += 1
        if cur is not None:
            gh, gw = pseudo_grid(cur.end - cur.start)
            mi = np.array([spatial_mutual_information(groups[grp, cur.start:cur.end], gh, gw)
                           for grp in range(kv_heads)])
            st.mi_ema = mi if st.mi_ema is None else c.mi_decay * st.mi_ema + (1 - c.mi_decay) * mi
        ramp = max(1, c.mi_profile_steps if c.mi_ramp_steps == 0 else c.mi_ramp_steps)
        lam = 0.0 if st.profile_step <= c.mi_profile_steps else \
            c.mi_lambda * min(1.0, (st.profile_step - c.mi_profile_steps) / ramp)
        weights = group_weights(st.mi_ema, c.mi_tau) if st.mi_ema is not None else np.full(kv_heads, 1 / kv_heads)
        owner = np.argmax(groups, axis=0)
        factor = (1 - lam) + lam * (weights * kv_heads)
        scores = base * factor[owner]
        # Temporal stability discount (§2.3 step 9).
        if past > 0 and len(spans) >= 2 and cur is not None:
            pattern = np.maximum(groups[:, cur.start:cur.end], 0.0)
            sums = np.cumsum(pattern, axis=1)[:, -1]
            pattern = pattern / np.maximum(sums, 1e-8)[:, None]
            if st.pattern_ema is not None and st.pattern_ema.shape == pattern.shape:
                ema = c.temporal_rho * st.pattern_ema + (1 - c.temporal_rho) * pattern
            else:
                ema = pattern
            st.pattern_ema = ema
            dot = np.cumsum(pattern * ema, axis=1)[:, -1]
            na = np.cumsum(pattern * pattern, axis=1)[:, -1]
            nb = np.cumsum(ema * ema, axis=1)[:, -1]
            stability = np.clip(dot / np.maximum(np.sqrt(na) * np.sqrt(nb), 1e-8), 0, 1)
            if st.temporal_step > c.temporal_warmup:
                f = len(spans)
                for i, s in enumerate(spans):
                    age = float(f - 1 - i)
                    if age <= 0:
                        continue
                    phi = c.temporal_eps + (1 - c.temporal_eps) * stability[owner[s.start:s.end]]
                    d = c.temporal_discount_min + (1 - c.temporal_discount_min) * np.exp(-c.temporal_delta * age * phi)
                    scores[s.start:s.end] *= d
        # Power sharpening (§2.3 step 10).
        if temperature > 0:
            scores = np.power(np.maximum(scores, 0.0), 1 / temperature)
        return scores

    def layer_kept(self, layer: int, win_sum: np.ndarray, hid_norm: np.ndarray, window_sizes: list[int],
                   images, prompt_length: int, budget_percent: float, kv_heads: int) -> np.ndarray:
        """Kept positions of one layer (one set shared by every head). Call after begin_step."""
        plan = BudgetPlan.make(prompt_length, budget_percent, self.config.window)
        if not plan.compresses:
            return np.arange(prompt_length, dtype=np.int64)
        k = max(1, min(plan.capacity - plan.window, plan.past))
        scores = self.score_layer(layer, win_sum, hid_norm, window_sizes, images, plan, kv_heads)
        return kept_rows(topk_mask(scores, k), plan)[0]


# ---- driving a trace ------------------------------------------------------------------------

def replay_trace(reader, policy: str, budget_percent: float, fetch=None):
    """Yields (step position, layer, kept rows) for every step and layer of `reader`
    (starkv_recorder.format.TraceReader). `fetch(pos, field, layer)` defaults to
    `reader.tensor`; the benchmark passes one that reads pre-decoded arrays."""
    fetch = fetch or reader.tensor
    hdr = reader.header
    windows = list(hdr.window_sizes)
    layers = hdr.model.num_layers
    kv_heads = hdr.model.num_kv_heads
    scorer = StarKVScorer(layers) if policy == "starkv" else None
    for pos, entry in enumerate(reader.steps):
        rec = entry.record
        if scorer is not None:
            scorer.begin_step(rec.reset)
        for layer in range(layers):
            win = fetch(pos, "win_sum", layer)
            if policy == "snapkv":
                kept = snapkv_layer(win, windows, rec.prompt_length, budget_percent)
            elif policy == "starkv":
                kept = [scorer.layer_kept(layer, win, fetch(pos, "hid_norm", layer), windows, list(rec.images),
                                          rec.prompt_length, budget_percent, kv_heads)]
            else:
                raise ValueError(f"numpy_scoring implements snapkv and starkv, not {policy!r}")
            yield pos, layer, kept
