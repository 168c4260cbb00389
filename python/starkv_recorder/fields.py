"""Per-layer trace fields computed from plain tensors (docs/algorithms.md §1.4, §3, §9, §10.2).

`compute_layer_fields` takes one decoder layer's post-RoPE queries [H, L, d] and keys
[Hkv, L, d], the attention-input hidden states [L, D] (after the layer's input RMSNorm), the
image spans and the post-vision start e*, and returns the catalog fields of FORMAT.md for that
layer. It never materialises an L x L matrix: attention rows are computed per KV-head group in
query chunks (fp32 scores, fp32 softmax), and the window suffix sums, the all-query and
post-vision column sums and the > 0.01 counts are accumulated chunk by chunk, in ascending row
order. With only core fields it computes just the last max(window_sizes) rows.

`DecodeAttentionSum` accumulates `decode_attn_sum` over generated tokens.

No model is needed: any engine that can hand over post-RoPE q/k of a layer can record through
`starkv_recorder.format.TraceWriter` with these functions.

Numerics (docs/algorithms.md §1.5): with `numerics="fp32"` (default) q and k are upcast to fp32
before q.k and the fp32 probabilities are summed. With `numerics="bf16-reference"` the window
block follows the reference kernels' dtype flow (`update_kv` of the STaR-KV / GUI-KV clusters):
q.k in bf16, divided by sqrt(d) in bf16, the window's causal mask added, softmax in fp32 cast back
to bf16, and the window rows summed into a bf16 tensor (`.sum(dim=-2)`) — computed separately for
every recorded window, as the reference does for its one window; `colsum_postvis` is the same
sum over the post-vision rows (VL-Cache), `colsum_all` the bf16 sum over all rows (H2O),
`win_rows` those bf16 probabilities (stored as f16:
exact for probabilities >= 2^-14) and `hid_norm` the bf16 norm of the bf16 hidden state.
The stored f32 values are then exactly bf16 values. Other fields stay fp32.
Results are deterministic for a given device and torch build (fixed chunking, fixed reduction
order over chunks); torch reductions inside a chunk are not guaranteed bit-identical across
devices or thread counts.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from .errors import FieldComputationError
from .format import (COLSUM_ALL, COLSUM_POSTVIS, COUNT_GT_001, DECODE_ATTN_SUM, FIELDS_BY_FIDELITY,
                     FULL_FIELDS, GUIKV_RESID, HID_NORM, N_VALID, WIN_ROWS, WIN_SUM)

try:  # torch is an optional dependency ([torch] extra)
    import torch
except ImportError:  # pragma: no cover - exercised only without the extra
    torch = None  # type: ignore[assignment]

DEFAULT_WINDOW_SIZES = (8, 16, 32, 64)
#: The probability threshold of VL-Cache's sparsity count (docs/algorithms.md §9).
SPARSITY_THRESHOLD = 0.01
#: Rank of GUI-KV's current-frame key basis (docs/algorithms.md §3 step 4).
GUIKV_RANK = 32


def _need_torch() -> None:
    if torch is None:
        raise FieldComputationError("the field computation needs torch: pip install 'starkv-recorder[torch]'")


def resolve_fields(fields: str | Iterable[str]) -> tuple[str, ...]:
    """`"core" | "standard" | "full"` or an explicit list of catalog names -> names in catalog order."""
    if isinstance(fields, str):
        if fields not in FIELDS_BY_FIDELITY:
            raise FieldComputationError(f"unknown fidelity {fields!r}; use core, standard, full or a list of fields")
        return FIELDS_BY_FIDELITY[fields]
    names = list(fields)
    for f in names:
        if f not in FULL_FIELDS:
            raise FieldComputationError(f"unknown field {f!r}; known: {', '.join(FULL_FIELDS)}")
    return tuple(f for f in FULL_FIELDS if f in names)


def fidelity_of(fields: Sequence[str]) -> str:
    """The lowest fidelity level whose field set contains all of `fields`."""
    for level in ("core", "standard", "full"):
        if set(fields) <= set(FIELDS_BY_FIDELITY[level]):
            return level
    return "full"


@dataclasses.dataclass(frozen=True)
class LayerInputs:
    """What the field computation needs about the prompt (shared by every layer of a step)."""
    image_spans: tuple[tuple[int, int], ...]  # [start, end) of each image's <|image_pad|> run, last = current
    post_vision_start: int                   # e*: first query row counted by colsum_postvis / count_gt_001


def _check(q, k, hidden, spans, e_star, window_sizes, win_rows_max, rank):
    if q.dim() != 3 or k.dim() != 3:
        raise FieldComputationError(f"queries must be [H, L, d] and keys [Hkv, L, d]; got {tuple(q.shape)} and "
                                    f"{tuple(k.shape)}")
    H, L, d = q.shape
    Hkv = k.shape[0]
    if k.shape[1] != L or k.shape[2] != d:
        raise FieldComputationError(f"keys {tuple(k.shape)} do not match queries {tuple(q.shape)} (need [Hkv, L, d])")
    if Hkv == 0 or H % Hkv:
        raise FieldComputationError(f"{H} query heads is not a multiple of {Hkv} KV heads")
    if L == 0:
        raise FieldComputationError("prompt length L is 0")
    prev = 0
    for i, (s, e) in enumerate(spans):
        if not (prev <= s < e <= L):
            raise FieldComputationError(f"image span {i} [{s}, {e}) is empty, out of order or exceeds L={L}")
        prev = e
    if not (0 <= e_star < L):
        raise FieldComputationError(f"post-vision start e*={e_star} outside [0, L={L})")
    if not window_sizes or any(w <= 0 for w in window_sizes) or list(window_sizes) != sorted(set(window_sizes)):
        raise FieldComputationError(f"window_sizes {list(window_sizes)} must be positive and strictly ascending")
    if win_rows_max < 0:
        raise FieldComputationError(f"win_rows_max {win_rows_max} < 0")
    if rank <= 0:
        raise FieldComputationError(f"GUI-KV rank {rank} must be positive")
    if hidden is not None and (hidden.dim() != 2 or hidden.shape[0] != L):
        raise FieldComputationError(f"hidden states must be [L={L}, D]; got {tuple(hidden.shape)}")


def _causal_probs(qg, kg, row0: int, row1: int, scale: float):
    """fp32 softmax rows [G, row1-row0, row1] of causal attention for query rows [row0, row1)."""
    s = torch.matmul(qg[:, row0:row1].float(), kg[:row1].float().transpose(0, 1)) * scale
    rows = torch.arange(row0, row1, device=s.device).unsqueeze(1)
    cols = torch.arange(0, row1, device=s.device).unsqueeze(0)
    s = s.masked_fill(cols > rows, float("-inf"))
    return torch.softmax(s, dim=-1)


NUMERICS = ("fp32", "bf16-reference")


def reference_window_probs(q, k, window: int):
    """bf16 probabilities [G, w, L] of the last w query rows of one KV group in the reference's
    dtype flow (docs/algorithms.md §1.4 steps 1-2): q.k in bf16 / sqrt(d), the window's causal mask
    added, fp32 softmax cast to bf16."""
    _need_torch()
    L, d = k.shape
    w = max(1, min(int(window), L))
    qb = q[:, L - w:].to(torch.bfloat16)
    kb = k.to(torch.bfloat16)
    logits = torch.matmul(qb, kb.transpose(0, 1)) / math.sqrt(d)            # bf16 [G, w, L]
    mask = torch.full((w, w), torch.finfo(logits.dtype).min, device=logits.device)
    cond = torch.arange(w, device=logits.device)
    mask.masked_fill_(cond < (cond + 1).view(w, 1), 0)
    logits[:, :, L - w:] += mask.to(logits.dtype)
    return torch.softmax(logits, dim=-1, dtype=torch.float32).to(torch.bfloat16)


def reference_window_sums(q, k, window: int):
    """The reference's window sums for one KV group, in its dtype flow (bf16): q [G, L, d] and
    k [L, d] are cast to bf16; returns a bf16 tensor [G, L] whose first L - w columns are the
    sum over the last w query rows of the bf16 probabilities and whose last w columns are the same
    sums over the window's own (causally masked) keys. Mirrors `STARKVGroupCluster.update_kv` /
    `SnapKVCluster.update_kv` up to the `.sum(dim=-2)` (docs/algorithms.md §1.4 steps 1-3)."""
    return reference_window_probs(q, k, window).sum(dim=-2)                  # bf16 [G, L]


def reference_column_sums(q, k, chunk_rows: int = 512):
    """H2O's column sums in the reference's dtype flow (KVCache-Factory `H2OKVCluster.update_kv`;
    docs/algorithms.md §6.2, §12): bf16 logits of all L query rows (causal), fp32 softmax cast to
    bf16, summed over the rows into a bf16 tensor [G, L]. Rows are processed in chunks; the sum
    accumulates in fp32 and is rounded once, as the one `.sum(dim=-2)` kernel does."""
    _need_torch()
    L, d = k.shape
    kb = k.to(torch.bfloat16)
    acc = torch.zeros(q.shape[0], L, dtype=torch.float32, device=q.device)
    step = max(1, int(chunk_rows))
    for a in range(0, L, step):
        b = min(L, a + step)
        logits = torch.matmul(q[:, a:b].to(torch.bfloat16), kb[:b].transpose(0, 1)) / math.sqrt(d)   # bf16 [G, b-a, b]
        rows = torch.arange(a, b, device=q.device).view(-1, 1)
        cols = torch.arange(b, device=q.device).view(1, -1)
        logits = logits.masked_fill(cols > rows, float("-inf"))
        acc[:, :b] += torch.softmax(logits, dim=-1, dtype=torch.float32).to(torch.bfloat16).float().sum(dim=1)
    return acc.to(torch.bfloat16)


def compute_layer_fields(queries, keys, hidden_states, image_spans: Sequence[tuple[int, int]],
                         post_vision_start: int, *, fields: str | Iterable[str] = "standard",
                         window_sizes: Sequence[int] = DEFAULT_WINDOW_SIZES, win_rows_max: int = 0,
                         guikv_rank: int = GUIKV_RANK, scaling: float | None = None,
                         chunk_rows: int = 512, max_chunk_bytes: int = 256 * 2**20,
                         win_sum_dtype=np.float32, guikv_resid_dtype=np.float32,
                         numerics: str = "fp32") -> dict[str, np.ndarray]:
    """Fields of one decoder layer at prefill, as numpy arrays keyed by catalog name.

    Args:
      queries: post-RoPE queries [H, L, d] (any float dtype, any device).
      keys: post-RoPE keys [Hkv, L, d]; query head h uses KV head h // (H / Hkv).
      hidden_states: attention input [L, D] (after the input RMSNorm); needed for hid_norm.
      image_spans: [start, end) of every image's visual tokens in prompt order (last = current).
      post_vision_start: e*, the first query row of the post-vision block (VL-Cache, §9).
      fields: "core", "standard", "full" or a list of catalog names (decode_attn_sum is skipped
        here: it is accumulated at decode by `DecodeAttentionSum`).
      window_sizes: windows of win_sum's first axis; a window longer than L sums all L rows.
      win_rows_max: W of win_rows ([H, W, L] f16; rows before the prompt start are zero).
      scaling: score scale, default 1/sqrt(d).
      chunk_rows, max_chunk_bytes: query-row chunking of the all-row pass (memory bound:
        G * rows * L * 4 bytes per chunk, G = H / Hkv).
      numerics: "fp32" or "bf16-reference" (the reference's dtype flow for win_sum,
        colsum_postvis and hid_norm; see the module docstring).

    Returns: {field: array} with the FORMAT.md shapes: win_sum [NW, H, L], hid_norm [V],
      guikv_resid [Hkv, Vprev] (only with >= 2 images), colsum_all / colsum_postvis [H, L] f32,
      count_gt_001 [H] i64, n_valid [1] i64, win_rows [H, W, L] f16.
    """
    _need_torch()
    if numerics not in NUMERICS:
        raise FieldComputationError(f"numerics {numerics!r}: use one of {', '.join(NUMERICS)}")
    bf16 = numerics == "bf16-reference"
    names = set(resolve_fields(fields))
    q, k = queries, keys
    hidden = hidden_states
    spans = [(int(s), int(e)) for s, e in image_spans]
    e_star = int(post_vision_start)
    _check(q, k, hidden, spans, e_star, window_sizes, win_rows_max if WIN_ROWS in names else 0, guikv_rank)
    H, L, d = q.shape
    Hkv = k.shape[0]
    G = H // Hkv
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
    dev = q.device
    out: dict[str, np.ndarray] = {}

    want_win = WIN_SUM in names
    W = int(win_rows_max) if WIN_ROWS in names else 0
    want_all = bool(names & {COLSUM_ALL, COLSUM_POSTVIS, COUNT_GT_001, N_VALID})
    if W == 0 and WIN_ROWS in names:
        raise FieldComputationError("win_rows requested but win_rows_max is 0")

    # The window block: the last Wb rows, shared by win_sum / win_rows and (if wanted) the all-row pass.
    Wb = min(L, max([max(window_sizes) if want_win else 0, W]))
    if Wb == 0 and want_all:
        Wb = min(L, max(window_sizes))
    tail0 = L - Wb

    if want_win:
        win_sum = torch.zeros(len(window_sizes), H, L, dtype=torch.float32, device=dev)
    if W:
        win_rows = torch.zeros(H, W, L, dtype=torch.float32, device=dev)
    if want_all:
        col_all = torch.zeros(H, L, dtype=torch.float32, device=dev)
        col_pv = torch.zeros(H, L, dtype=torch.float32, device=dev)
        cnt = torch.zeros(H, dtype=torch.int64, device=dev)

    rows_per_chunk = max(1, min(int(chunk_rows), int(max_chunk_bytes) // max(1, G * L * 4)))
    for g in range(Hkv):
        qg = q[g * G:(g + 1) * G]
        kg = k[g]
        hs = slice(g * G, (g + 1) * G)
        bounds = []
        if want_all:
            a = 0
            while a < tail0:
                b = min(tail0, a + rows_per_chunk)
                bounds.append((a, b))
                a = b
        if Wb:
            bounds.append((tail0, L))
        for a, b in bounds:
            p = _causal_probs(qg, kg, a, b, scale)  # [G, b-a, b]
            if want_all:
                col_all[hs, :b] += p.sum(dim=1)
                r0 = max(a, e_star)
                if r0 < b:
                    pv = p[:, r0 - a:]
                    col_pv[hs, :b] += pv.sum(dim=1)
                    cnt[hs] += (pv > SPARSITY_THRESHOLD).sum(dim=(1, 2))
            if a == tail0 and Wb:
                # suffix sums over the window rows: cs[:, m] = sum of the last m+1 rows
                cs = torch.cumsum(torch.flip(p, dims=[1]), dim=1)
                if want_win:
                    for wi, w in enumerate(window_sizes):
                        win_sum[wi, hs, :b] = cs[:, min(int(w), Wb) - 1]
                if W:
                    n = min(W, Wb)
                    win_rows[hs, W - n:, :b] = p[:, Wb - n:]
    if bf16 and (want_win or COLSUM_POSTVIS in names or COLSUM_ALL in names or W):
        for g in range(Hkv):
            hs = slice(g * G, (g + 1) * G)
            if W:
                n = min(W, L)
                win_rows[hs, W - n:] = reference_window_probs(q[hs], k[g], n).float()
            if want_win:
                for wi, w in enumerate(window_sizes):
                    win_sum[wi, hs] = reference_window_sums(q[hs], k[g], int(w)).float()
            if COLSUM_POSTVIS in names:
                col_pv[hs] = reference_window_sums(q[hs], k[g], L - e_star).float()
            if COLSUM_ALL in names:
                col_all[hs] = reference_column_sums(q[hs], k[g], rows_per_chunk).float()
    if want_win:
        out[WIN_SUM] = win_sum.cpu().numpy().astype(win_sum_dtype)
    if W:
        out[WIN_ROWS] = win_rows.cpu().numpy().astype(np.float16)
    if want_all:
        if COLSUM_ALL in names:
            out[COLSUM_ALL] = col_all.cpu().numpy()
        if COLSUM_POSTVIS in names:
            out[COLSUM_POSTVIS] = col_pv.cpu().numpy()
        if COUNT_GT_001 in names:
            out[COUNT_GT_001] = cnt.cpu().numpy().astype(np.int64)
        if N_VALID in names:
            # causal entries of rows e*..L-1: sum of (i + 1)
            out[N_VALID] = np.array([(L * (L + 1) - e_star * (e_star + 1)) // 2], dtype=np.int64)
    if HID_NORM in names:
        if hidden is None:
            raise FieldComputationError("hid_norm requested but no hidden states were given")
        if spans:
            idx = torch.cat([torch.arange(s, e, device=hidden.device) for s, e in spans])
            hv = hidden[idx].to(torch.bfloat16) if bf16 else hidden[idx].float()
            out[HID_NORM] = torch.linalg.vector_norm(hv, dim=-1).float().cpu().numpy().astype(np.float32)
        else:
            out[HID_NORM] = np.zeros(0, dtype=np.float32)
    if GUIKV_RESID in names and len(spans) >= 2:
        out[GUIKV_RESID] = guikv_residuals(k, spans, rank=guikv_rank).astype(guikv_resid_dtype)
    return out


def guikv_residuals(keys, image_spans: Sequence[tuple[int, int]], rank: int = GUIKV_RANK) -> np.ndarray:
    """GUI-KV temporal residuals (docs/algorithms.md §3 step 4), per KV head: for every visual token of
    every image but the last, rho = ||k - U U^T k|| where U = the first min(rank, Vc, d) columns of
    the thin QR of the current frame's keys K_c^T (d x Vc), all in fp32. Returns [Hkv, Vprev]."""
    _need_torch()
    if len(image_spans) < 2:
        raise FieldComputationError("GUI-KV residuals need at least two images")
    s_cur, e_cur = image_spans[-1]
    kc = keys[:, s_cur:e_cur].float()                     # [Hkv, Vc, d]
    Q, _ = torch.linalg.qr(kc.transpose(1, 2), mode="reduced")  # [Hkv, d, min(d, Vc)]
    r = min(rank, kc.shape[1], kc.shape[2])
    U = Q[:, :, :r]
    idx = torch.cat([torch.arange(s, e, device=keys.device) for s, e in image_spans[:-1]])
    kp = keys[:, idx].float()                              # [Hkv, Vprev, d]
    proj = torch.matmul(torch.matmul(kp, U), U.transpose(1, 2))
    return torch.linalg.vector_norm(kp - proj, dim=-1).cpu().numpy().astype(np.float32)


class DecodeAttentionSum:
    """Accumulates `decode_attn_sum` [H, L] for one layer: the sum, over the decode forward passes
    of generated tokens, of the full-cache attention (fp32 softmax over all cached keys, prompt and
    generated) that each prompt key receives."""

    def __init__(self, num_query_heads: int, prompt_length: int, device=None):
        _need_torch()
        self.prompt_length = int(prompt_length)
        self.total = torch.zeros(num_query_heads, self.prompt_length, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, query, keys, scaling: float | None = None) -> None:
        """query: [H, 1, d] (or [H, d]) of one generated token; keys: [Hkv, Lk, d], Lk >= L."""
        q = query if query.dim() == 3 else query.unsqueeze(1)
        if q.shape[1] != 1:
            raise FieldComputationError(f"decode query must hold one token, got {tuple(query.shape)}")
        H, _, d = q.shape
        Hkv, Lk, dk = keys.shape
        if dk != d or H % Hkv or H != self.total.shape[0]:
            raise FieldComputationError(f"decode shapes do not match: query {tuple(query.shape)}, keys {tuple(keys.shape)}")
        if Lk < self.prompt_length:
            raise FieldComputationError(f"decode keys hold {Lk} positions, fewer than the prompt's {self.prompt_length}")
        scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
        G = H // Hkv
        qf = q.float().reshape(Hkv, G, d)
        s = torch.matmul(qf, keys.float().transpose(1, 2)) * scale   # [Hkv, G, Lk]
        p = torch.softmax(s, dim=-1).reshape(H, Lk)
        self.total += p[:, :self.prompt_length].to(self.total.device)
        self.tokens += 1

    def result(self) -> np.ndarray:
        return self.total.cpu().numpy().astype(np.float32)
