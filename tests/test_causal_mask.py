"""The causal mask hides the future exactly (docs/derivations/causal-mask.md)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.functional.attention import (
    attention_weights,
    masked_softmax,
    scaled_dot_product_attention,
)
from scratchformer.functional.causal_attention import (
    CausalAttentionFunction,
    _exp_floor,
    causal_attention,
)
from scratchformer.functional.masks import causal_mask
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.nn.kv_cache import decode_causal_mask

BACKENDS = ["scratch", "sdpa"]
F32 = torch.float32


def _model(backend: str, dtype: torch.dtype = F32, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=37, context_len=16, n_layers=2, n_heads=2, d_model=16,
        attention_backend=backend, **kw,
    )
    return GPT(cfg).to(dtype).eval()


# --- §1: masked weights are exact zeros -----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    L=st.integers(1, 9),
    log_scale=st.floats(-3.0, 37.0),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_masked_weights_are_exactly_zero_for_any_finite_scores(L, log_scale, seed, dtype):
    """-inf above the diagonal gives exact zeros, whatever the (finite) scores, up to 1e37."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(L, L, generator=g, dtype=torch.float64) * 10.0**log_scale).to(dtype)
    future = torch.ones(L, L, dtype=torch.bool).triu(1)
    weights = masked_softmax(scores.masked_fill(future, float("-inf")))
    assert torch.isfinite(weights).all()
    assert (weights[future] == 0).all()
    assert (weights.sum(-1) - 1).abs().max() < 1e-5
    reference = torch.softmax(scores.masked_fill(future, float("-inf")), -1)  # PyTorch's too
    assert (reference[future] == 0).all()


# --- §2: the model's past does not see its future --------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=15, deadline=None)
@given(cut=st.integers(1, 11), seed=st.integers(0, 2**31 - 1))
def test_future_tokens_leave_past_logits_bitwise_unchanged(backend, cut, seed):
    """Replacing tokens at positions >= cut leaves logits at positions < cut bit-identical."""
    model = _model(backend)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 37, (3, 12), generator=g)
    other = idx.clone()
    other[:, cut:] = (idx[:, cut:] + torch.randint(1, 37, (3, 12 - cut), generator=g)) % 37
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(other)
    assert torch.equal(a[:, :cut], b[:, :cut])
    assert not torch.equal(a[:, cut:], b[:, cut:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_gradient_to_future_embeddings_is_exactly_zero(backend, positional):
    """d(logit_t)/d(embedding_s) == 0 exactly for s > t, and nonzero for s = t."""
    model = _model(backend, positional=positional)
    T = 10
    idx = torch.randint(0, 37, (2, T), generator=torch.Generator().manual_seed(1))
    emb = model.tok_emb(idx).detach().requires_grad_()
    handle = model.tok_emb.register_forward_hook(lambda module, inputs, output: emb)
    try:
        logits, _ = model(idx)
    finally:
        handle.remove()
    probe = torch.randn(logits.shape[-1], generator=torch.Generator().manual_seed(2))
    for t in range(T):
        (grad,) = torch.autograd.grad((logits[:, t] @ probe).sum(), emb, retain_graph=True)
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0, f"position {t} sees the future"
        assert (grad[:, t].abs().sum(-1) > 0).all()


# --- §3: decoding with a cache ----------------------------------------------------------------


def test_decode_causal_mask_is_bottom_right_aligned():
    """Query i of a chunk of L after P cached positions sees keys j <= P + i."""
    m = decode_causal_mask(3, 5)
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(m, expected)
    assert torch.equal(decode_causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert decode_causal_mask(1, 6).all()
    assert decode_causal_mask(3, 5) is m  # cached
    with pytest.raises(ValueError, match="S \\(keys\\) must be >= L"):
        decode_causal_mask(5, 3)
    with pytest.raises(TypeError, match="L must be an int"):
        decode_causal_mask(2.0, 3)


# --- §4: finite masks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "n"),
    [(torch.float64, 1074), (torch.float32, 149), (torch.bfloat16, 133), (torch.float16, 24)],
)
def test_exp_underflow_thresholds(dtype, n):
    """exp(x) rounds to 0 iff x < -(n + 1) ln 2, where 2^-n is the smallest subnormal."""
    assert torch.tensor(2.0**-n, dtype=dtype) > 0  # 2^-n is representable ...
    assert torch.tensor(2.0**-n, dtype=torch.float64).to(dtype) / 2 == 0  # ... and the smallest
    threshold = -(n + 1) * math.log(2)
    margin = 0.6 if dtype == torch.bfloat16 else 0.05  # bfloat16 steps by 0.5 near -93
    below = torch.tensor(threshold - margin, dtype=dtype)
    above = torch.tensor(threshold + margin, dtype=dtype)
    assert torch.exp(below) == 0
    assert torch.exp(above) > 0
    assert torch.exp(torch.tensor(float("-inf"), dtype=dtype)) == 0


def _two_position_attention(mask: torch.Tensor | None, is_causal: bool):
    """The leak example of the derivation: q0 = 1, k = (0, 9970), v = (1, 1e7), head size 1."""
    q = torch.tensor([[1.0], [1.0]], dtype=F32, requires_grad=True)
    k = torch.tensor([[0.0], [9970.0]], dtype=F32, requires_grad=True)
    v = torch.tensor([[1.0], [1e7]], dtype=F32, requires_grad=True)
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=1.0)
    grad_k, grad_v = torch.autograd.grad(out[0, 0], (k, v))
    return out, grad_k, grad_v


def test_finite_mask_leaks_weight_and_gradient_to_the_future():
    """A -1e4 mask lets query 0 see key 1 (weight e^-30); -inf gives exact zeros."""
    finite = torch.tensor([[0.0, -1e4], [0.0, 0.0]], dtype=F32)
    out, grad_k, grad_v = _two_position_attention(finite, is_causal=False)
    leak = math.exp(-30) / (1 + math.exp(-30))
    assert grad_v[1, 0].item() == pytest.approx(leak, rel=1e-5)  # dO0/dv1 = A01 ≈ 9.36e-14
    assert grad_k[1, 0].item() == pytest.approx(leak * (1e7 - out[0, 0].item()), rel=1e-4)
    assert out[0, 0].item() == 1.0 + 8 * 2.0**-23  # v1 moved o0 by 8 float32 ulps
    # PyTorch's kernel leaks the same way
    q, k, v = torch.tensor([[1.0], [1.0]]), torch.tensor([[0.0], [9970.0]]), torch.tensor(
        [[1.0], [1e7]]
    )
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=finite, scale=1.0)
    assert ref[0, 0].item() > 1.0

    for mask, causal in ((None, True), (torch.tensor([[0.0, -math.inf], [0.0, 0.0]]), False)):
        out, grad_k, grad_v = _two_position_attention(mask, is_causal=causal)
        assert out[0, 0].item() == 1.0
        assert grad_v[1, 0].item() == 0.0 and grad_k[1, 0].item() == 0.0


def test_finite_mask_failure_modes():
    """finfo.min masks overflow when combined; a fully masked row ignores a finite mask."""
    assert torch.tensor(-1e9).to(torch.float16).item() == -math.inf
    fmin = torch.finfo(F32).min
    combined = torch.tensor(fmin, dtype=F32) + torch.tensor(fmin, dtype=F32)
    assert combined.item() == -math.inf
    all_masked = torch.full((3,), -math.inf)
    assert torch.isnan(torch.softmax(all_masked, -1)).all()  # -inf - (-inf) = NaN
    assert torch.equal(masked_softmax(all_masked), torch.zeros(3))  # handled explicitly
    scores = torch.tensor([0.3, -1.2, 2.0])
    fully_masked_finite = torch.softmax(scores - 1e4, -1)  # every key "masked" by -1e4
    # the unmasked weights, up to rounding s - 1e4 to float32's step of 2^-10 there
    torch.testing.assert_close(fully_masked_finite, torch.softmax(scores, -1), atol=1e-3, rtol=0)
    assert fully_masked_finite.min() > 0.01


# --- the standalone mask and every path that uses it -------------------------------------------


@pytest.mark.parametrize("L", [0, 1, 2, 5, 8])
@pytest.mark.parametrize("S", [0, 1, 3, 5, 11])
def test_causal_mask_is_the_lower_triangle_with_its_diagonal(L: int, S: int) -> None:
    """causal_mask(L, S)[i, j] is True exactly when j <= i (top-left aligned, diagonal visible)."""
    mask = causal_mask(L, S)
    i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
    assert mask.dtype == torch.bool and mask.shape == (L, S)
    assert torch.equal(mask, j <= i)
    assert mask.diagonal().all()  # §1 needs the diagonal unmasked: the row maximum is finite
    if L and S:
        assert mask[:, 0].all() and not mask[0, 1:].any()  # query 0 sees key 0 and nothing else


@pytest.mark.parametrize(("L", "S"), [(7, 7), (5, 9), (9, 5), (1, 4)])
def test_every_causal_path_computes_pytorchs_causal_attention(L: int, S: int) -> None:
    """The tiled kernel (is_causal=True), the general path given causal_mask(L, S), and the
    weights of attention_weights all equal PyTorch's is_causal=True attention (float64)."""
    g = torch.Generator().manual_seed(L * 100 + S)
    q, k, v = (torch.randn(2, 3, n, 4, generator=g, dtype=torch.float64) for n in (L, S, S))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    paths = {
        "tiled kernel": scaled_dot_product_attention(q, k, v, is_causal=True),
        "general path with causal_mask": scaled_dot_product_attention(
            q, k, v, attn_mask=causal_mask(L, S)),
        "attention_weights": attention_weights(q, k, is_causal=True) @ v,
    }
    for name, out in paths.items():
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, msg=name)
    weights = attention_weights(q, k, is_causal=True)
    assert torch.equal(weights != 0, causal_mask(L, S).expand_as(weights))


# --- §5: the tiled kernel behind is_causal=True -------------------------------------------------


def _saved_weight_tiles(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        block_rows: int) -> list[tuple[tuple[int, int, int], torch.Tensor]]:
    """The weight tiles A that CausalAttentionFunction saves, with their (i0, i1, j1) blocks."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = CausalAttentionFunction.apply(q, k, v, scale, False, block_rows, 1 << 30)
    tiles = out.grad_fn.saved_tensors[3:]
    L, S = q.shape[1], k.shape[1]
    blocks = [(i0, min(i0 + block_rows, L), min(i0 + block_rows, L, S))
              for i0 in range(0, L, block_rows)]
    assert len(tiles) == len(blocks)  # one tile per block: every batch row fits in one
    return list(zip(blocks, tiles, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_kernel_hidden_weights_are_exact_zeros_and_the_floor_moves_the_rest_little(
    dtype: torch.dtype,
) -> None:
    """With future scores far above the visible ones and visible exponents far below the floor,
    hidden weights are exact zeros (tril_), visible weights are never zero, the ones the floor
    raises move by at most e^floor, and the rest are the softmax up to rounding of the scores."""
    g = torch.Generator().manual_seed(3)
    N, L, E = 2, 40, 8
    q, k, v = (torch.randn(N, L, E, generator=g).to(dtype) for _ in range(3))
    k = k * 300.0  # scores of size 1e3–1e4: visible exponents down to about −1e4
    scores = q.double() @ k.double().transpose(1, 2)
    hidden = torch.ones(L, L, dtype=torch.bool).triu(1)
    exact = torch.softmax(scores.masked_fill(hidden, -math.inf), -1)  # float64, same inputs
    lift = math.exp(_exp_floor(dtype))  # e^floor = e·tiny
    assert scores[:, hidden].max() > 1e3  # future scores far above the past ones
    rel = 2e-3 if dtype == torch.float32 else 1e-11  # rounding of scores of size 1e4
    for (i0, i1, j1), a in _saved_weight_tiles(q, k, v, 1.0, 16):
        tile_hidden = hidden[i0:i1, :j1]
        assert (a[:, tile_hidden] == 0).all()
        assert (a[:, ~tile_hidden] > 0).all()
        ref, err = exact[:, i0:i1, :j1], (a.double() - exact[:, i0:i1, :j1]).abs()
        raised = ~tile_hidden & (ref < lift)  # exact weight below e^floor: the floor lifts it
        assert raised.any() and (err[raised] <= 1.001 * lift).all()
        kept = ~tile_hidden & (ref >= lift)
        assert (err[kept] <= rel * ref[kept]).all()


@pytest.mark.parametrize("recompute", [False, True], ids=["saved_weights", "recompute"])
@pytest.mark.parametrize("block_rows", [1, 7, 16, 64])
def test_tiled_kernel_past_outputs_and_gradients_ignore_the_future_bitwise(
    recompute: bool, block_rows: int,
) -> None:
    """Changing keys and values at positions > t (to large finite values) leaves outputs and
    dQ at positions <= t bit-identical, and with no upstream gradient after t, dK and dV at
    positions > t are exact zeros: §2 on the tiled kernel, for cuts inside and between tiles."""
    g = torch.Generator().manual_seed(block_rows)
    N, L, E = 3, 40, 8
    q, k, v, d_out = (torch.randn(N, L, E, generator=g) for _ in range(4))
    for t in (0, 6, 15, 16, 23, 38):
        k2, v2 = k.clone(), v.clone()
        k2[:, t + 1:] = torch.randn(N, L - t - 1, E, generator=g) * 1e3
        v2[:, t + 1:] = torch.randn(N, L - t - 1, E, generator=g) * 1e3
        grad = d_out.clone()
        grad[:, t + 1:] = 0.0
        runs = []
        for keys, values in ((k, v), (k2, v2)):
            leaves = [x.clone().requires_grad_() for x in (q, keys, values)]
            out = causal_attention(*leaves, recompute=recompute, block_rows=block_rows)
            runs.append((out, *torch.autograd.grad(out, leaves, grad)))
        (out_a, dq_a, dk_a, dv_a), (out_b, dq_b, dk_b, dv_b) = runs
        assert torch.equal(out_a[:, : t + 1], out_b[:, : t + 1]), t
        assert torch.equal(dq_a[:, : t + 1], dq_b[:, : t + 1]), t
        for d in (dk_a, dv_a, dk_b, dv_b):
            assert torch.count_nonzero(d[:, t + 1:]) == 0, t
        with torch.no_grad():  # the inference path: no weights kept, the output normalised
            fast_a = causal_attention(q, k, v, block_rows=block_rows)
            fast_b = causal_attention(q, k2, v2, block_rows=block_rows)
        assert torch.equal(fast_a[:, : t + 1], fast_b[:, : t + 1]), t


def test_tiled_kernel_never_reads_keys_beyond_its_block() -> None:
    """Keys j >= i1 are skipped by the block [i0, i1): even NaN and inf there leave its outputs
    and dQ bit-identical. A non-finite hidden key *inside* a diagonal tile is multiplied by an
    exact zero instead, and 0·inf = NaN reaches the rows of that tile that hide it (§2's caveat)."""
    g = torch.Generator().manual_seed(0)
    q, k, v, d_out = (torch.randn(2, 40, 8, generator=g) for _ in range(4))

    def run(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and dQ, with no upstream gradient after position 31."""
        leaves = [x.clone().requires_grad_() for x in (q, keys, values)]
        out = causal_attention(*leaves, block_rows=16)
        grad = d_out.clone()
        grad[:, 32:] = 0.0
        return out, torch.autograd.grad(out, leaves[0], grad)[0]

    out, dq = run(k, v)
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[:, 32:], v_bad[:, 32:] = math.nan, math.inf  # beyond the blocks [0, 16) and [16, 32)
    out_bad, dq_bad = run(k_bad, v_bad)
    assert torch.equal(out_bad[:, :32], out[:, :32]) and torch.equal(dq_bad[:, :32], dq[:, :32])
    assert torch.isnan(out_bad[:, 32:]).all()
    k_in, v_in = k.clone(), v.clone()
    k_in[:, 20], v_in[:, 20] = math.nan, math.inf  # hidden from queries 16..19, same tile
    with torch.no_grad():
        clean = causal_attention(q, k, v, block_rows=16)
        out_in = causal_attention(q, k_in, v_in, block_rows=16)
    assert torch.equal(out_in[:, :16], clean[:, :16])  # an earlier block: skipped
    assert torch.isnan(out_in[:, 16:20]).all()  # same tile, multiplied by zero: poisoned
