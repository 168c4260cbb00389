"""Field computation (docs/algorithms.md §1.4, §3, §9, §10.2) against brute-force full attention."""
import math

import numpy as np
import pytest
import torch

from starkv_recorder import FieldComputationError
from starkv_recorder.fields import DecodeAttentionSum, compute_layer_fields, guikv_residuals, resolve_fields


def brute_attention(q, k):
    """Full causal softmax attention [H, L, L] in float64 numpy (GQA: head h uses KV head h // G)."""
    q = q.double().numpy()
    k = k.double().numpy()
    H, L, d = q.shape
    G = H // k.shape[0]
    out = np.zeros((H, L, L))
    for h in range(H):
        s = q[h] @ k[h // G].T / math.sqrt(d)
        s[np.triu_indices(L, 1)] = -np.inf
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        out[h] = e / e.sum(axis=1, keepdims=True)
    return out


def random_qk(H=4, Hkv=2, L=23, d=8, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(H, L, d, generator=g) * scale, torch.randn(Hkv, L, d, generator=g) * scale,
            torch.randn(L, 12, generator=g))


def test_uniform_attention_gives_hand_computed_sums():
    # q = 0: every causal row is uniform, row i puts 1/(i+1) on each key j <= i.
    q = torch.zeros(1, 3, 2)
    k = torch.randn(1, 3, 2)
    f = compute_layer_fields(q, k, None, [], 1, fields=["win_sum", "colsum_all", "colsum_postvis",
                                                        "count_gt_001", "n_valid"], window_sizes=(1, 2, 8))
    np.testing.assert_allclose(f["win_sum"][0, 0], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["win_sum"][1, 0], [1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["win_sum"][2, 0], [1 + 1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["colsum_all"][0], [1 + 1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["colsum_postvis"][0], [1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3], rtol=1e-6)
    assert f["count_gt_001"].tolist() == [5]   # rows 1 and 2: 2 + 3 entries, all > 0.01
    assert f["n_valid"].tolist() == [5]        # (1 + 1) + (2 + 1)
    assert f["count_gt_001"].dtype == np.int64 and f["colsum_all"].dtype == np.float32


@pytest.mark.parametrize("chunk_rows", [1, 5, 512])
def test_fields_equal_brute_force_full_attention(chunk_rows):
    q, k, hidden = random_qk()
    H, L, _ = q.shape
    A = brute_attention(q, k)
    e_star = 9
    f = compute_layer_fields(q, k, hidden, [(2, 6), (10, 16)], e_star, fields="full",
                             window_sizes=(4, 8, 16, 64), win_rows_max=5, chunk_rows=chunk_rows)
    for wi, w in enumerate((4, 8, 16, 64)):
        np.testing.assert_allclose(f["win_sum"][wi], A[:, L - min(w, L):].sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(f["colsum_all"], A.sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(f["colsum_postvis"], A[:, e_star:].sum(axis=1), atol=1e-5)
    assert f["count_gt_001"].tolist() == (A[:, e_star:] > 0.01).sum(axis=(1, 2)).tolist()
    assert f["n_valid"].tolist() == [sum(i + 1 for i in range(e_star, L))]
    np.testing.assert_allclose(f["win_rows"].astype(np.float64), A[:, L - 5:], atol=1e-3)
    assert f["win_rows"].dtype == np.float16 and f["win_rows"].shape == (H, 5, L)
    idx = list(range(2, 6)) + list(range(10, 16))
    np.testing.assert_allclose(f["hid_norm"], np.linalg.norm(hidden.numpy()[idx], axis=1), rtol=1e-6)
    assert f["guikv_resid"].shape == (2, 4)


def test_chunking_does_not_change_the_result():
    q, k, hidden = random_qk(L=40, seed=3)
    a = compute_layer_fields(q, k, hidden, [(5, 20)], 21, fields="standard", chunk_rows=3)
    b = compute_layer_fields(q, k, hidden, [(5, 20)], 21, fields="standard", chunk_rows=1000)
    c = compute_layer_fields(q, k, hidden, [(5, 20)], 21, fields="standard", max_chunk_bytes=1)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
        np.testing.assert_allclose(a[name], c[name], atol=1e-6)


def test_core_fields_need_only_the_window_rows_and_match_the_standard_pass():
    q, k, hidden = random_qk(L=30, seed=4)
    core = compute_layer_fields(q, k, hidden, [(3, 9), (12, 20)], 20, fields="core")
    std = compute_layer_fields(q, k, hidden, [(3, 9), (12, 20)], 20, fields="standard")
    assert set(core) == {"win_sum", "hid_norm", "guikv_resid"}
    np.testing.assert_allclose(core["win_sum"], std["win_sum"], atol=1e-6)


def test_query_heads_use_consecutive_kv_groups():
    # Only KV head 1 carries structure; query heads 2, 3 (group 1) must differ from heads 0, 1.
    q, k, _ = random_qk(H=4, Hkv=2, L=12, seed=5)
    k[0] = 0.0  # group 0: uniform attention
    f = compute_layer_fields(q, k, None, [], 0, fields=["colsum_all"])
    uniform = np.array([sum(1 / (i + 1) for i in range(j, 12)) for j in range(12)])
    np.testing.assert_allclose(f["colsum_all"][0], uniform, rtol=1e-5)
    np.testing.assert_allclose(f["colsum_all"][1], uniform, rtol=1e-5)
    assert not np.allclose(f["colsum_all"][2], uniform, rtol=1e-3)


def test_guikv_residuals_match_a_numpy_qr_projection():
    g = torch.Generator().manual_seed(11)
    d = 40
    k = torch.randn(2, 60, d, generator=g)
    spans = [(0, 10), (12, 20), (25, 60)]  # current frame: 35 tokens -> rank 32 < d
    got = guikv_residuals(k, spans)
    assert got.shape == (2, 18)
    for h in range(2):
        kc = k[h, 25:60].double().numpy()
        Q, _ = np.linalg.qr(kc.T)
        U = Q[:, :32]
        kp = np.concatenate([k[h, 0:10].double().numpy(), k[h, 12:20].double().numpy()])
        expect = np.linalg.norm(kp - (kp @ U) @ U.T, axis=1)
        np.testing.assert_allclose(got[h], expect, rtol=1e-4, atol=1e-4)


def test_guikv_residual_is_zero_for_a_key_inside_the_current_frames_span_and_full_for_an_orthogonal_one():
    d = 8
    cur = torch.zeros(1, 3, d)
    cur[0, 0, 0] = 1.0
    cur[0, 1, 1] = 2.0
    cur[0, 2, 0] = 1.0
    prev = torch.zeros(1, 2, d)
    prev[0, 0] = torch.tensor([3.0, -4.0, 0, 0, 0, 0, 0, 0])   # in span{e0, e1}
    prev[0, 1] = torch.tensor([0, 0, 0, 5.0, 0, 0, 0, 0])      # orthogonal
    k = torch.cat([prev, cur], dim=1)
    got = guikv_residuals(k, [(0, 2), (2, 5)], rank=32)
    np.testing.assert_allclose(got[0], [0.0, 5.0], atol=1e-6)
    # rank 1 keeps only e0: the first previous key keeps its e1 part
    np.testing.assert_allclose(guikv_residuals(k, [(0, 2), (2, 5)], rank=1)[0], [4.0, 5.0], atol=1e-6)


def test_decode_attention_sum_equals_the_prompt_columns_of_full_cache_softmax():
    g = torch.Generator().manual_seed(2)
    H, Hkv, d, L = 4, 2, 8, 6
    keys = torch.randn(Hkv, L + 2, d, generator=g)
    acc = DecodeAttentionSum(H, L)
    expect = np.zeros((H, L))
    for t in range(2):
        qt = torch.randn(H, 1, d, generator=g)
        kt = keys[:, :L + t + 1]
        acc.add(qt, kt)
        for h in range(H):
            s = (qt[h, 0].double() @ kt[h // 2].double().T).numpy() / math.sqrt(d)
            p = np.exp(s - s.max())
            expect[h] += (p / p.sum())[:L]
    np.testing.assert_allclose(acc.result(), expect, atol=1e-6)
    assert acc.tokens == 2


def test_bad_inputs_raise_typed_errors():
    q, k, hidden = random_qk()
    with pytest.raises(FieldComputationError, match="multiple"):
        compute_layer_fields(q[:3], k, hidden, [], 0)
    with pytest.raises(FieldComputationError, match="span"):
        compute_layer_fields(q, k, hidden, [(5, 3)], 0)
    with pytest.raises(FieldComputationError, match="span"):
        compute_layer_fields(q, k, hidden, [(2, 6), (4, 8)], 0)
    with pytest.raises(FieldComputationError, match="e\\*"):
        compute_layer_fields(q, k, hidden, [], 99)
    with pytest.raises(FieldComputationError, match="ascending"):
        compute_layer_fields(q, k, hidden, [], 0, window_sizes=(8, 4))
    with pytest.raises(FieldComputationError, match="unknown field"):
        resolve_fields(["win_sum", "attention"])
    with pytest.raises(FieldComputationError, match="hidden"):
        compute_layer_fields(q, k, hidden[:5], [], 0)
    with pytest.raises(FieldComputationError, match="two images"):
        guikv_residuals(k, [(0, 4)])
