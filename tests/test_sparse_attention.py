"""Block-sparse attention: layouts, their dense renders, the kernel against dense masked attention.

Also checks the counting and two-hop connectivity claims of
docs/derivations/sparse-attention-complexity.md.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from scratchformer.experiments.registry import StudyError, get
from scratchformer.experiments.runner import run_study
from scratchformer.functional.attention import scaled_dot_product_attention
from scratchformer.functional.sparse import (
    SparseLayout,
    SparsePattern,
    block_sparse_attention,
    block_sparse_scores,
    layout_to_mask,
    local_layout,
    strided_layout,
    union_layout,
    window_strided_layout,
)
from scratchformer.generation import generate
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.attention import MultiHeadAttention


def _hand_mask(L: int, window: int, stride: int, causal: bool) -> torch.Tensor:
    """Window + every ``stride``-th token (positions stride-1, 2·stride-1, ...), entry by entry."""
    mask = torch.zeros(L, L, dtype=torch.bool)
    for i in range(L):
        for j in range(L):
            near = 0 <= i - j < window if causal else abs(i - j) < window
            summary = j % stride == stride - 1 and (j <= i or not causal)
            mask[i, j] = near or summary
    return mask


LAYOUTS = {
    "local": lambda L, b, c: local_layout(L, b, 5, causal=c),
    "strided": lambda L, b, c: strided_layout(L, b, 4, causal=c),
    "strided_blocks": lambda L, b, c: strided_layout(L, b, 2 * b, width=b, causal=c),
    "union": lambda L, b, c: window_strided_layout(L, b, 6, 4, causal=c),
}


# --- layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L, block", [(37, 8), (32, 8), (5, 16), (23, 1)])
def test_window_plus_every_fourth_token_renders_the_hand_built_mask(L, block, causal):
    expected = _hand_mask(L, window=6, stride=4, causal=causal)
    together = window_strided_layout(L, block, 6, 4, causal=causal)
    merged = union_layout(local_layout(L, block, 6, causal=causal),
                          strided_layout(L, block, 4, causal=causal))  # fmt: skip
    for layout in (together, merged):
        assert torch.equal(layout_to_mask(layout), expected)
        assert layout.entries == int(expected.sum())
        assert layout.causal is causal


def test_strided_width_selects_the_last_positions_of_each_span():
    mask = layout_to_mask(strided_layout(12, 4, 6, width=2, causal=False))
    assert mask[0].nonzero().flatten().tolist() == [4, 5, 10, 11]


def test_slots_hold_each_key_once_per_block():
    layout = window_strided_layout(100, 16, 20, 10)
    for q in range(layout.n_blocks):
        used = layout.key_index[q][layout.mask[q].any(0)]
        assert used.unique().numel() == used.numel()


@pytest.mark.parametrize("L, w", [(50, 7), (64, 64), (10, 30)])
def test_local_entries_equal_the_formula(L, w):
    # causal: sum_i min(i + 1, w); bidirectional: L(2w - 1) - w(w - 1) when w <= L
    assert local_layout(L, 8, w).entries == sum(min(i + 1, w) for i in range(L))
    if w <= L:
        assert local_layout(L, 8, w, causal=False).entries == L * (2 * w - 1) - w * (w - 1)


@pytest.mark.parametrize("L, s", [(50, 7), (64, 8), (9, 16)])
def test_strided_entries_equal_the_formula(L, s):
    # causal: sum_i floor((i + 1) / s); bidirectional: L floor(L / s)
    assert strided_layout(L, 8, s).entries == sum((i + 1) // s for i in range(L))
    assert strided_layout(L, 8, s, causal=False).entries == L * (L // s)


@pytest.mark.parametrize("L", [64, 100, 256])
def test_two_hop_connectivity_at_w_equal_s_sqrt_n(L):
    s = w = math.isqrt(L)
    mask = layout_to_mask(window_strided_layout(L, 8, w, s)).to(torch.float64)
    two_hops = (mask @ mask) > 0  # i -> k -> j, k's row being the one the token reads
    assert bool(torch.tril(torch.ones(L, L, dtype=torch.bool)).le(two_hops).all())
    # and w = s is tight in this sense: a stride above the window leaves pairs unconnected
    wide = layout_to_mask(window_strided_layout(L, 8, w, 2 * w + 1)).to(torch.float64)
    assert not bool(torch.tril(torch.ones(L, L, dtype=torch.bool)).le((wide @ wide) > 0).all())


def test_gathered_entries_bounded_by_the_formula():
    for L in (1000, 4096):
        s = w = math.isqrt(L)
        b = 32
        layout = window_strided_layout(L, b, w, s)
        n_blocks = -(-L // b)
        # slots per block <= window run (w + b - 1) + summary positions (L / s)
        assert layout.slots <= w + b - 1 + L // s
        assert layout.gathered_entries == n_blocks * b * layout.slots


# --- the kernel --------------------------------------------------------------------------------


def _qkv(shape, dtype, seed=0, ev=None):
    gen = torch.Generator().manual_seed(seed)
    *batch, L, E = shape
    q = torch.randn(*batch, L, E, dtype=dtype, generator=gen, requires_grad=True)
    k = torch.randn(*batch, L, E, dtype=dtype, generator=gen, requires_grad=True)
    v = torch.randn(*batch, L, ev or E, dtype=dtype, generator=gen, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("L, block", [(37, 8), (48, 16), (7, 4)])
def test_matches_dense_masked_attention_values_and_gradients(dtype, tol, causal, name, L, block):
    layout = LAYOUTS[name](L, block, causal)
    mask = layout_to_mask(layout)
    q, k, v = _qkv((2, 3, L, 8), dtype, ev=5)
    grad_out = torch.randn(2, 3, L, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    out = block_sparse_attention(q, k, v, layout)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < tol
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g - r).abs().max().item() < tol


def test_rows_that_see_no_key_give_zeros_not_nan():
    layout = strided_layout(10, 4, 4)  # queries 0..2 see no summary position yet
    q, k, v = _qkv((10, 4), torch.float64)
    out = block_sparse_attention(q, k, v, layout)
    assert torch.isfinite(out).all() and out[:3].abs().max() == 0
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_explicit_scale_and_unbatched_input():
    layout = window_strided_layout(20, 8, 4, 3)
    q, k, v = _qkv((20, 6), torch.float64)
    ref = scaled_dot_product_attention(q, k, v, attn_mask=layout_to_mask(layout), scale=0.3)
    assert torch.allclose(block_sparse_attention(q, k, v, layout, scale=0.3), ref, atol=1e-12)


def test_gradcheck_float64():
    layout = window_strided_layout(11, 4, 3, 4)
    q, k, v = _qkv((1, 11, 3), torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b, c: block_sparse_attention(a, b, c, layout), (q, k, v)
    )


@pytest.mark.parametrize("L", [256, 1024, 4096])
def test_score_tensor_grows_like_n_times_slots_not_n_squared(L):
    s = w = math.isqrt(L)
    layout = window_strided_layout(L, 16, w, s)
    q = torch.randn(1, 2, L, 4)
    scores = block_sparse_scores(q, q, layout)
    assert scores.numel() == 2 * layout.gathered_entries
    assert scores.numel() <= 2 * L * (w + 16 + L // s)  # O(n (w + n/s)) = O(n sqrt(n))
    if L >= 1024:
        assert scores.numel() < 2 * L * L / 4


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: local_layout(0, 4, 2), ValueError, "length must be >= 1, got 0"),
        (lambda: local_layout(8, 0, 2), ValueError, "block must be >= 1, got 0"),
        (lambda: local_layout(8, 4, 2.5), TypeError, "window must be an int, got float"),
        (lambda: local_layout(8, 4, 2, causal=1), TypeError, "causal must be a bool"),
        (lambda: strided_layout(8, 4, 0), ValueError, "stride must be >= 1"),
        (lambda: strided_layout(8, 4, 2, width=3), ValueError, "width must be <= stride=2"),
        (lambda: union_layout(), ValueError, "at least one layout"),
        (lambda: union_layout(local_layout(8, 4, 2), local_layout(9, 4, 2)), ValueError,
         r"share length and block.*\(9, 4\)"),
        (lambda: union_layout(local_layout(8, 4, 2), "x"), TypeError, r"layouts\[1\]"),
        (lambda: layout_to_mask(torch.ones(2, 2)), TypeError, "layout must be a SparseLayout"),
    ],
)
def test_bad_layout_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_kernel_arguments():
    layout = local_layout(8, 4, 2)
    x = torch.randn(2, 8, 4)
    with pytest.raises(ValueError, match=r"query length \(axis -2\) must equal layout.length=8"):
        block_sparse_attention(torch.randn(2, 9, 4), x, x, layout)
    with pytest.raises(ValueError, match=r"same last dimension E, got query \(2, 8, 5\)"):
        block_sparse_attention(torch.randn(2, 8, 5), x, x, layout)
    with pytest.raises(TypeError, match=r"value must be floating point, got dtype torch\.int64"):
        block_sparse_attention(x, x, torch.ones(2, 8, 4, dtype=torch.int64), layout)
    with pytest.raises(TypeError, match="layout must be a SparseLayout"):
        block_sparse_attention(x, x, x, layout_to_mask(layout))
    with pytest.raises(ValueError, match="mask must be bool of shape"):
        SparseLayout(8, 4, True, layout.key_index, layout.mask[:, :2])
    with pytest.raises(ValueError, match=r"key_index entries must lie in \[0, length=8\)"):
        SparseLayout(8, 4, True, layout.key_index + 7, layout.mask)
    bidirectional = local_layout(8, 4, 2, causal=False)
    with pytest.raises(ValueError, match="causal=True but the mask lets a query see a later key"):
        SparseLayout(8, 4, True, bidirectional.key_index, bidirectional.mask)


# --- the "block_sparse" attention backend --------------------------------------------------------


def test_multi_head_attention_block_sparse_equals_scratch_with_the_layout_mask():
    torch.manual_seed(0)
    pattern = SparsePattern(block=4, window=3, stride=4)
    mha = MultiHeadAttention(16, 2, backend="block_sparse", sparse=pattern).double()
    x = torch.randn(2, 19, 16, dtype=torch.float64)
    out = mha(x, is_causal=True)
    mask = layout_to_mask(pattern.layout(19, causal=True))
    mha.backend = "scratch"
    assert torch.allclose(out, mha(x, attn_mask=mask), atol=1e-12)
    mha.backend = "block_sparse"
    weighted, weights = mha(x, is_causal=True, need_weights=True)
    assert torch.allclose(weighted, out, atol=1e-12)
    assert bool((weights[..., ~mask] == 0).all())


def test_gpt_block_sparse_with_a_covering_window_is_the_dense_gpt():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_len=24, n_layers=2, n_heads=2, d_model=16,
                    attention_backend="block_sparse", sparse_block=8, sparse_window=24)
    model = GPT(cfg).double()
    idx = torch.randint(0, 11, (2, 21))
    logits, loss = model(idx, idx)
    loss.backward()
    sparse_grad = model.tok_emb.weight.grad.clone()
    model.zero_grad()
    dense_logits, dense_loss = model.configure_backend("scratch")(idx, idx)
    dense_loss.backward()
    assert torch.allclose(logits, dense_logits, atol=1e-10)
    assert torch.allclose(sparse_grad, model.tok_emb.weight.grad, atol=1e-10)


def test_gpt_block_sparse_differs_from_dense_when_sparse_and_rejects_kv_cache():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_len=64, n_layers=1, n_heads=2, d_model=16,
                    attention_backend="block_sparse", sparse_block=8)
    model = GPT(cfg).eval()
    idx = torch.randint(0, 11, (1, 64))
    sparse_logits, _ = model(idx)
    model.configure_backend("scratch")
    dense_logits, _ = model(idx)
    # w = s = 8: the first 8 positions see the same keys, later ones do not
    assert torch.allclose(sparse_logits[:, :8], dense_logits[:, :8], atol=1e-5)
    assert not torch.allclose(sparse_logits[:, 16:], dense_logits[:, 16:], atol=1e-5)
    model.configure_backend("block_sparse")
    with pytest.raises(NotImplementedError, match="KV cache"):
        generate(model, idx[:, :4], 2, greedy=True)
    assert generate(model, idx[:, :4], 2, greedy=True, use_cache=False).shape == (1, 6)


@pytest.mark.parametrize(
    "field, value, error, match",
    [
        ("sparse_block", 0, ValueError, "sparse_block must be >= 1, got 0"),
        ("sparse_window", 1.5, TypeError, "sparse_window must be an int"),
        ("attention_backend", "sparse", ValueError, "block_sparse"),
    ],
)
def test_gpt_config_rejects_bad_sparse_fields(field, value, error, match):
    kwargs = dict(vocab_size=5, context_len=8, n_layers=1, n_heads=1, d_model=4)
    with pytest.raises(error, match=match):
        GPTConfig(**kwargs, **{field: value})


def test_block_sparse_backend_needs_a_pattern_and_no_mask():
    x = torch.randn(1, 6, 8)
    with pytest.raises(ValueError, match="needs a pattern"):
        MultiHeadAttention(8, 2, backend="block_sparse")(x, is_causal=True)
    mha = MultiHeadAttention(8, 2, backend="block_sparse", sparse=SparsePattern(block=4))
    with pytest.raises(NotImplementedError, match="no attn_mask"):
        mha(x, attn_mask=torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="sparse must be a SparsePattern"):
        MultiHeadAttention(8, 2, sparse="window")


# --- the sparse.quality study ------------------------------------------------------------------

SPARSE_QUALITY = {"eval_every": 3, "context_len": 32, "sparse_block": 8, "seeds": 2,
                  "picture_len": 24}


def test_sparse_quality_study_tiny(tmp_path, tiny_char_lm):
    study = get("sparse.quality")
    cfg = dataclasses.replace(study.config("quick"), **{**tiny_char_lm, **SPARSE_QUALITY})
    record = run_study(study, cfg, tmp_path)
    m = record["metrics"]
    out = tmp_path / "sparse.quality"
    assert json.loads((out / "metrics.json").read_text())["metrics"]["seeds"] == 2
    assert {"layouts.png", "val_loss.png"} <= set(record["figures"])
    assert (out / "train_log_block_sparse_seed1.jsonl").is_file()
    for backend in ("dense", "block_sparse"):
        r = m["backends"][backend]
        assert len(r["val_loss"]["values"]) == 2 and r["val_loss"]["std"] >= 0
        assert math.isfinite(r["val_loss"]["mean"]) and r["tokens_per_s"]["mean"] > 0
        assert r["curves"][0]["step"] == [3, 6]
    points = {p["variant"]: p for p in m["tradeoff"]["points"]}
    assert points["block_sparse"]["speed"] == m["backends"]["block_sparse"]["tokens_per_s"]["mean"]
    assert points["dense"]["quality"] == m["backends"]["dense"]["val_loss"]["mean"]
    assert m["dense_backend"] == cfg.attention_backend == "sdpa"
    lay = m["layout"]
    assert (lay["window"], lay["stride"]) == (6, 6)  # round(sqrt(32))
    expected = layout_to_mask(window_strided_layout(32, 8, 6, 6)).sum().item()
    assert lay["pairs"] == expected and 0 < lay["fraction_of_causal_pairs"] < 1


@pytest.mark.parametrize(("field", "value", "match"), [
    ("sparse_block", 0, "sparse_block must be >= 1, got 0"),
    ("sparse_window", -1, "sparse_window must be >= 0, got -1"),
    ("picture_len", 0, "picture_len must be >= 1, got 0"),
    ("attention_backend", "flash", r"attention_backend must be one of .*got 'flash'"),
])
def test_sparse_quality_config_rejects_bad_values(field, value, match):
    cfg = get("sparse.quality").config("quick")
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(cfg, **{field: value})


def test_sparse_quality_config_override_error_is_a_study_error():
    study = get("sparse.quality")
    with pytest.raises(StudyError, match="sparse_block must be >= 1, got 0"):
        study.config("quick", {"sparse_block": "0"})
    with pytest.raises(StudyError, match=r"attention_backend must be one of .*got 'flash'"):
        study.config("quick", {"attention_backend": "flash"})
