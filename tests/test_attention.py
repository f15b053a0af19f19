"""Scaled dot-product attention and multi-head attention against PyTorch's reference kernels."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.experiments import registry
from scratchformer.experiments.attention import (
    MASK_KINDS,
    AttentionCase,
    Config,
    compare_case,
    grid_cases,
    make_inputs,
    pairwise_cover,
    run_kernel,
)
from scratchformer.functional.attention import (
    attention_weights,
    masked_softmax,
    scaled_dot_product_attention,
)
from scratchformer.functional.masks import (
    as_additive_mask,
    bool_to_additive,
    causal_mask,
    padding_mask,
)
from scratchformer.nn.attention import MultiHeadAttention

F64_TOL = 1e-12
LENGTHS = (1, 7, 128, 512)


def _assert_match_sdpa(case: AttentionCase, seed: int) -> None:
    """Outputs and q/k/v gradients of ours and SDPA agree in float64 for ``case``."""
    inputs = make_inputs(case, torch.Generator().manual_seed(seed))
    ours = run_kernel(scaled_dot_product_attention, inputs, torch.float64)
    ref = run_kernel(F.scaled_dot_product_attention, inputs, torch.float64)
    for name in ("out", "dq", "dk", "dv"):
        assert ours[name].shape == ref[name].shape
        assert torch.isfinite(ours[name]).all()
        diff = (ours[name] - ref[name]).abs().max().item()
        assert diff < F64_TOL, f"{case.label()} {name}: max abs diff {diff:.3e}"


# --- equivalence with F.scaled_dot_product_attention -------------------------------------------


@pytest.mark.parametrize("mask", MASK_KINDS)
@pytest.mark.parametrize(("lq", "lk"), list(itertools.product(LENGTHS, LENGTHS)))
@pytest.mark.parametrize("head_dim", (16, 64))
def test_matches_sdpa_all_lengths_and_masks(lq: int, lk: int, mask: str, head_dim: int) -> None:
    """Every (Lq, Lk, mask, head size) combination, at batch 4 and one head."""
    case = AttentionCase(batch=4, heads=1, lq=lq, lk=lk, head_dim=head_dim, mask=mask)
    _assert_match_sdpa(case, seed=lq * 1000 + lk)


@pytest.mark.parametrize("case", grid_cases(Config()), ids=lambda c: c.label())
def test_matches_sdpa_covering_design(case: AttentionCase) -> None:
    """A pairwise covering subset of batch {1,4} × heads {1,8} × lengths² × head size × mask."""
    _assert_match_sdpa(case, seed=7)


def test_pairwise_cover_covers_every_pair() -> None:
    """Each pair of values of any two factors appears in some chosen row; fewer rows than all."""
    factors = {"a": (1, 2, 3), "b": ("x", "y"), "c": (0, 1, 2, 3), "d": (True, False)}
    rows = pairwise_cover(factors)
    for f1, f2 in itertools.combinations(factors, 2):
        seen = {(r[f1], r[f2]) for r in rows}
        assert seen == set(itertools.product(factors[f1], factors[f2]))
    assert len(rows) < math.prod(len(v) for v in factors.values())
    assert rows == pairwise_cover(factors)  # deterministic


def test_grid_covers_the_required_values() -> None:
    """The quick covering design really spans every required value, incl. unequal lengths."""
    cases = grid_cases(Config())
    assert {c.batch for c in cases} == {1, 4} and {c.heads for c in cases} == {1, 8}
    assert {c.lq for c in cases} == set(LENGTHS) == {c.lk for c in cases}
    assert {c.mask for c in cases} == set(MASK_KINDS)
    assert any(c.lq != c.lk for c in cases)
    assert len(grid_cases(Config(design="full"))) == 2 * 2 * 4 * 4 * 2 * len(MASK_KINDS)


FLOAT32_CASES = [
    AttentionCase(4, 8, 128, 128, 64, "none"),
    AttentionCase(2, 8, 512, 512, 64, "causal"),
    AttentionCase(4, 8, 128, 512, 16, "key_padding"),
    AttentionCase(1, 8, 512, 7, 64, "additive"),
    AttentionCase(4, 1, 7, 128, 16, "bool_full"),
]


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=lambda c: c.label())
def test_float32_error_no_worse_than_sdpa(case: AttentionCase, record_property) -> None:
    """In float32 our error vs a float64 reference is within 4× (+1e-7) of SDPA's own error."""
    record = compare_case(case, torch.Generator().manual_seed(3))
    for name in ("out", "dq", "dk", "dv"):
        ours, sdpa = record["f32_err_ours"][name], record["f32_err_sdpa"][name]
        assert ours <= 4 * sdpa + 1e-7, f"{name}: ours {ours:.3e} vs SDPA {sdpa:.3e}"
        assert record["f32_diff"][name] < 1e-4  # the two float32 kernels agree closely
    record_property("float32_max_abs_diff_between_kernels", record["f32_diff"])


# --- open-ended shapes and masks ---------------------------------------------------------------


@st.composite
def attention_problem(draw):
    """Random broadcastable batch axes, lengths, feature sizes, mask kind/shape and scale."""
    n_batch = draw(st.integers(0, 2))
    batch = draw(st.lists(st.integers(1, 3), min_size=n_batch, max_size=n_batch))

    def sub_batch():  # broadcast: each axis kept or set to 1, leading axes maybe dropped
        dims = [draw(st.sampled_from([b, 1])) for b in batch]
        return dims[draw(st.integers(0, len(dims))) :]

    L, S = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    E, Ev = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    q_batch, k_batch, v_batch = sub_batch(), sub_batch(), sub_batch()
    # The mask may broadcast against the scores Q Kᵀ but must not enlarge them.
    score_batch = list(torch.broadcast_shapes(tuple(q_batch), tuple(k_batch)))
    mask_batch = [draw(st.sampled_from([b, 1])) for b in score_batch]
    mask_batch = mask_batch[draw(st.integers(0, len(mask_batch))) :]
    kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    mask_shape = [*mask_batch, draw(st.sampled_from([L, 1])), S]
    scale = draw(st.one_of(st.none(), st.floats(0.05, 3.0)))
    seed = draw(st.integers(0, 2**16))
    return {
        "shapes": ((*q_batch, L, E), (*k_batch, S, E), (*v_batch, S, Ev)),
        "kind": kind,
        "mask_shape": tuple(mask_shape),
        "scale": scale,
        "seed": seed,
    }


@settings(max_examples=60, deadline=None)
@given(attention_problem())
def test_matches_sdpa_random_shapes(problem: dict) -> None:
    """Random shapes, broadcasting and masks: ours equals SDPA to 1e-12 in float64."""
    g = torch.Generator().manual_seed(problem["seed"])
    q, k, v = (torch.randn(s, generator=g, dtype=torch.float64) for s in problem["shapes"])
    mask, is_causal = None, problem["kind"] == "causal"
    if problem["kind"] == "bool":
        mask = torch.rand(problem["mask_shape"], generator=g) > 0.4
        mask[..., 0] = True  # keep a key in every row
    elif problem["kind"] == "float":
        mask = torch.randn(problem["mask_shape"], generator=g, dtype=torch.float64)
    results = []
    for fn in (scaled_dot_product_attention, F.scaled_dot_product_attention):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out = fn(qq, kk, vv, attn_mask=mask, is_causal=is_causal, scale=problem["scale"])
        grads = torch.autograd.grad(out, (qq, kk, vv), torch.ones_like(out))
        results.append((out, *grads))
    for ours, ref in zip(*results, strict=True):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() < F64_TOL


def test_grouped_query_attention_matches_sdpa() -> None:
    """``enable_gqa`` repeats 2 key/value heads to serve 6 query heads, as PyTorch does."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 6, 5, 4, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, 7, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 7, 3, generator=g, dtype=torch.float64)
    ours = scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert (ours - ref).abs().max().item() < F64_TOL
    with pytest.raises(ValueError, match="enable_gqa"):
        scaled_dot_product_attention(q, k[:, :1].expand(2, 4, 7, 4), v, enable_gqa=True)


def test_float_mask_of_other_dtype_is_cast_like_pytorch() -> None:
    """A float32 additive mask with float64 inputs is used after casting, as SDPA does."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(5, 5, generator=g)
    ours = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (ours - ref).abs().max().item() < 1e-12


# --- fully masked rows, masks, weights, dropout ------------------------------------------------


@pytest.mark.parametrize("mask_type", ["bool", "additive"])
def test_fully_masked_rows_give_zeros(mask_type: str) -> None:
    """Policy: a query whose keys are all masked gets zero weights, output and gradients."""
    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(2, 4, 5, dtype=torch.bool)
    keep[0, 2] = False
    keep[1, :, 3] = False
    mask = keep if mask_type == "bool" else bool_to_additive(keep, torch.float64)
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    weights = attention_weights(q, k, attn_mask=mask)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert torch.isfinite(out).all() and torch.isfinite(dq).all() and torch.isfinite(dk).all()
    assert torch.equal(out[0, 2], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(weights[0, 2], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(dq[0, 2], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(weights[1].sum(-1), torch.ones(4, dtype=torch.float64))
    assert torch.equal(dk[1, 3], torch.zeros(3, dtype=torch.float64))  # masked key: no grad
    # PyTorch >= 2.5 (checked on 2.13 CPU) also returns zeros here; older versions gave NaN.
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if torch.isnan(ref).any():
        pytest.skip(f"torch {torch.__version__} returns NaN for fully masked rows")
    ref_grads = torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))
    assert (out - ref).abs().max().item() < F64_TOL
    for ours_g, ref_g in zip((dq, dk, dv), ref_grads, strict=True):
        assert (ours_g - ref_g).abs().max().item() < F64_TOL


def test_masked_softmax_matches_softmax_and_handles_empty_rows() -> None:
    """Equals torch.softmax on ordinary rows; all -inf rows become zeros; no overflow."""
    x = torch.tensor([[1000.0, 999.0, -5.0], [-math.inf] * 3, [0.0, -math.inf, 2.0]])
    got = masked_softmax(x)
    assert torch.allclose(got[[0, 2]], torch.softmax(x[[0, 2]], -1), atol=1e-7, rtol=0)
    assert torch.equal(got[1], torch.zeros(3))


def test_causal_mask_is_top_left_lower_triangle_and_cached() -> None:
    """causal_mask(L, S) is ones(L, S).tril(): query i sees keys 0..i, whatever L and S."""
    for L, S in [(4, 4), (5, 3), (3, 5), (1, 1)]:
        assert torch.equal(causal_mask(L, S), torch.ones(L, S, dtype=torch.bool).tril())
    assert causal_mask(6, 6) is causal_mask(6)
    with pytest.raises(ValueError, match="L must be >= 0"):
        causal_mask(-1, 2)
    with pytest.raises(TypeError, match="S must be an int"):
        causal_mask(2, 2.0)


def test_padding_mask_and_additive_conversion() -> None:
    """Key padding masks keep the first lengths[b] keys; bool/additive masks act the same."""
    pm = padding_mask(torch.tensor([2, 4, 0]), 4)
    assert pm.shape == (3, 1, 1, 4)
    assert pm[:, 0, 0].tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [False, False, False, False],
    ]
    add = bool_to_additive(pm, torch.float64)
    assert add.dtype == torch.float64 and add[0, 0, 0].tolist() == [0, 0, -math.inf, -math.inf]
    assert as_additive_mask(None, torch.float32) is None
    assert torch.equal(as_additive_mask(pm, torch.float64), add)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    keep = padding_mask(torch.tensor([1, 5, 3]), 5)
    a = scaled_dot_product_attention(q, k, v, attn_mask=keep)
    b = scaled_dot_product_attention(q, k, v, attn_mask=bool_to_additive(keep, torch.float64))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, S=4\]"):
        padding_mask(torch.tensor([5]), 4)
    with pytest.raises(TypeError, match="boolean"):
        bool_to_additive(torch.zeros(2))


def test_attention_weights_rows_sum_to_one_and_reproduce_output() -> None:
    """The exposed weights are a row-stochastic (..., L, S) matrix with weights @ v = output."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 6, 8, generator=g)
    k, v = torch.randn(2, 3, 9, 8, generator=g), torch.randn(2, 3, 9, 5, generator=g)
    w = attention_weights(q, k, is_causal=True)
    assert w.shape == (2, 3, 6, 9)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 6), atol=1e-6)
    assert torch.equal(w[..., 0, 1:], torch.zeros(2, 3, 8))  # causal: query 0 sees key 0 only
    out = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(w @ v, out, atol=1e-6)


def test_dropout_drops_attention_weights() -> None:
    """With dropout on, out = dropout(A) V (same RNG); off or not training, no dropout at all."""
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g, dtype=torch.float64) for _ in range(3))
    plain = scaled_dot_product_attention(q, k, v)
    assert torch.equal(scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False), plain)
    torch.manual_seed(0)
    dropped = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(0)
    expected = F.dropout(attention_weights(q, k), p=0.5) @ v
    assert torch.equal(dropped, expected)
    assert not torch.allclose(dropped, plain)


def test_bad_arguments_raise_clear_errors() -> None:
    """Wrong shapes, dtypes, masks and options fail early, naming the argument."""
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    sdpa = scaled_dot_product_attention
    with pytest.raises(ValueError, match="is_causal"):
        sdpa(q, k, v, attn_mask=torch.ones(3, 5, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match="same last dimension E"):
        sdpa(q, torch.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match="same length S"):
        sdpa(q, k, torch.randn(2, 4, 6))
    with pytest.raises(TypeError, match="share a dtype"):
        sdpa(q, k.double(), v)
    with pytest.raises(TypeError, match="floating point"):
        sdpa(q.long(), k.long(), v.long())
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sdpa(torch.randn(4), k, v)
    with pytest.raises(ValueError, match="do not broadcast"):
        sdpa(torch.randn(3, 3, 4), k, v)
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 4\) is not broadcastable"):
        sdpa(q, k, v, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="not broadcastable"):
        sdpa(q, k, v, attn_mask=torch.ones(7, 2, 3, 5, dtype=torch.bool))  # would enlarge
    with pytest.raises(TypeError, match="boolean or floating point"):
        sdpa(q, k, v, attn_mask=torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        sdpa(q, k, v, dropout_p=1.0)
    with pytest.raises(TypeError, match="scale"):
        sdpa(q, k, v, scale="0.5")
    with pytest.raises(TypeError, match=r"query must be a torch\.Tensor"):
        sdpa([[1.0]], k, v)


# --- MultiHeadAttention ------------------------------------------------------------------------


def _manual_mha(m: MultiHeadAttention, x, context, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-by-head loop with an explicit softmax: the textbook definition."""
    Dh, outs, weights = m.head_dim, [], []
    q, k, v = x @ m.w_q + m.b_q, context @ m.w_k + m.b_k, context @ m.w_v + m.b_v
    for h in range(m.n_heads):
        sl = slice(h * Dh, (h + 1) * Dh)
        scores = q[..., sl] @ k[..., sl].transpose(-2, -1) / math.sqrt(Dh)
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        a = torch.softmax(scores, dim=-1)
        weights.append(a)
        outs.append(a @ v[..., sl])
    return torch.cat(outs, -1) @ m.w_o + m.b_o, torch.stack(weights, 1)


def test_mha_parameters_registered_initialised_and_get_gradients() -> None:
    """Eight parameters of the documented shapes, within ±1/sqrt(d_model), all get gradients."""
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4)
    names = dict(m.named_parameters())
    assert set(names) == {f"{p}_{n}" for p in "wb" for n in "qkvo"}
    bound = 1 / math.sqrt(32)
    for name, p in names.items():
        assert p.shape == ((32, 32) if name.startswith("w") else (32,))
        assert p.abs().max().item() <= bound
    x = torch.randn(2, 5, 32)
    m(x, is_causal=True).square().sum().backward()
    for name, p in names.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    no_bias = MultiHeadAttention(32, 4, bias=False)
    assert no_bias.b_q is None and len(list(no_bias.parameters())) == 4
    assert no_bias(x).shape == (2, 5, 32)


def test_mha_matches_manual_per_head_computation() -> None:
    """Self- and cross-attention equal the per-head loop; weights rows sum to 1."""
    torch.manual_seed(1)
    m = MultiHeadAttention(24, 3).double()
    x, ctx = torch.randn(2, 5, 24, dtype=torch.float64), torch.randn(2, 7, 24, dtype=torch.float64)
    keep = torch.rand(5, 7) > 0.3
    keep[:, 0] = True
    for context, mask in [(x, None), (ctx, None), (ctx, keep)]:
        out, w = m(x, context=context, attn_mask=mask, need_weights=True)
        ref_out, ref_w = _manual_mha(m, x, context, mask)
        assert out.shape == (2, 5, 24) and w.shape == (2, 3, 5, context.shape[1])
        assert torch.allclose(out, ref_out, atol=1e-12, rtol=0)
        assert torch.allclose(w, ref_w, atol=1e-12, rtol=0)
        assert torch.allclose(w.sum(-1), torch.ones(2, 3, 5, dtype=torch.float64))
        assert torch.allclose(m(x, context=context, attn_mask=mask), out, atol=1e-12, rtol=0)


def test_mha_matches_torch_multihead_attention() -> None:
    """Same weights loaded into nn.MultiheadAttention (weights transposed) give the same output."""
    torch.manual_seed(2)
    m = MultiHeadAttention(16, 4).double()
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([m.w_q.T, m.w_k.T, m.w_v.T]))
        ref.in_proj_bias.copy_(torch.cat([m.b_q, m.b_k, m.b_v]))
        ref.out_proj.weight.copy_(m.w_o.T)
        ref.out_proj.bias.copy_(m.b_o)
    x, ctx = torch.randn(3, 6, 16, dtype=torch.float64), torch.randn(3, 4, 16, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])
    ours = m(x, context=ctx, attn_mask=padding_mask(lengths, 4))
    theirs, _ = ref(x, ctx, ctx, key_padding_mask=~padding_mask(lengths, 4)[:, 0, 0])
    assert (ours - theirs).abs().max().item() < 1e-12


def test_mha_padding_hides_padded_keys_and_dropout_respects_eval() -> None:
    """Changing padded context tokens changes nothing; eval mode switches dropout off."""
    torch.manual_seed(3)
    m = MultiHeadAttention(16, 2, dropout=0.5)
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    keep = padding_mask(torch.tensor([3, 5]), 5)
    m.eval()
    out = m(x, context=ctx, attn_mask=keep)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = 100.0
    assert torch.allclose(m(x, context=ctx2, attn_mask=keep), out, atol=1e-6)
    assert torch.equal(m(x, context=ctx, attn_mask=keep), out)
    m.train()
    assert not torch.allclose(m(x, context=ctx, attn_mask=keep), out)


def test_mha_bad_arguments() -> None:
    """Indivisible sizes, bad dropout and wrongly shaped inputs raise clear errors."""
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="n_heads must be >= 1, got 0"):
        MultiHeadAttention(10, 0)
    with pytest.raises(TypeError, match="d_model must be an int"):
        MultiHeadAttention(10.0, 2)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MultiHeadAttention(8, 2, dropout=1.5)
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, length, d_model=8\)"):
        m(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="context batch size 3"):
        m(torch.randn(2, 3, 8), context=torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match="is_causal"):
        m(torch.randn(2, 3, 8), attn_mask=torch.ones(3, 3, dtype=torch.bool), is_causal=True)
    assert "head_dim=4" in repr(m)


# --- the study ---------------------------------------------------------------------------------


def test_sdpa_match_study_quick_run(tmp_path) -> None:
    """The registered study runs on a tiny grid and reports agreement and passing gradchecks."""
    study = registry.get("attention.sdpa_match")
    cfg = study.config("quick", {"batches": "1,2", "heads": "2", "lengths": "1,5,9"})
    cfg = dataclasses.replace(cfg, head_dims=(4,))
    metrics = study.run(cfg, tmp_path)
    assert metrics["n_cases"] == len(grid_cases(cfg))
    assert metrics["float64_max_abs_diff_all"] < F64_TOL
    assert metrics["gradcheck_all_pass"]
    assert metrics["fully_masked_rows"] == {"ours_zero": True, "sdpa_agrees": True}
    assert metrics["float32_err_vs_float64"]["ours_max"] < 1e-5
    assert (tmp_path / "sdpa_match.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "cases.json").read_text())) == metrics["n_cases"]
    assert study.config("full").design == "full"
