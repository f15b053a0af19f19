"""Rank helpers: numerical/effective/stable rank, their inequalities, and per-head QK/OV forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchformer.analysis.rank import (
    effective_rank,
    numerical_rank,
    ov_matrices,
    qk_matrices,
    rank_summary,
    rank_tolerance,
    singular_values,
    stable_rank,
)

SLACK = 1e-9  # rounding-level singular values may lift erank/srank this far (see the derivation)


def _with_singular_values(s: list[float], m: int, n: int, seed: int) -> torch.Tensor:
    """A float64 (m, n) matrix U diag(s) Vᵀ with random orthonormal U, V and given s."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    sigma = torch.zeros(m, n, dtype=torch.float64)
    sigma[range(len(s)), range(len(s))] = torch.tensor(s, dtype=torch.float64)
    return u @ sigma @ v.T


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_numerical_rank_matches_numpy(m: int, n: int, data: st.DataObject, seed: int) -> None:
    """Same count as numpy.linalg.matrix_rank, and as the construction, for clear spectra.

    "Clear" is relative to the dtype: a spread of 1e6 is far above float64's threshold
    (~1e-15 σ_1) but near float32's (~1e-6 σ_1), so float32 gets singular values within 10x.
    """
    r = data.draw(st.integers(0, min(m, n)))
    s64 = data.draw(st.lists(st.floats(1e-3, 1e3), min_size=r, max_size=r))
    mat = _with_singular_values(sorted(s64, reverse=True), m, n, seed)
    assert int(numerical_rank(mat)) == np.linalg.matrix_rank(mat.numpy()) == r
    s32 = data.draw(st.lists(st.floats(0.1, 1.0), min_size=r, max_size=r))
    mat = _with_singular_values(sorted(s32, reverse=True), m, n, seed).float()
    assert int(numerical_rank(mat)) == np.linalg.matrix_rank(mat.numpy()) == r


def test_hand_made_ranks() -> None:
    """A rank-3 product, the identity, a zero matrix; float32 uses float32's epsilon."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, 8, generator=g, dtype=torch.float64)
    assert int(numerical_rank(a @ b)) == 3
    # in float32 the product's rounding noise (~1e-7 relative) is far above float64's threshold
    p32 = a.float() @ b.float()
    assert int(numerical_rank(p32)) == 3
    assert int(numerical_rank(p32, tol=10 * 2.0**-52 * float(singular_values(p32)[0]))) > 3
    assert int(numerical_rank(torch.eye(6))) == 6
    assert int(numerical_rank(torch.zeros(4, 5))) == 0


def test_default_tolerance_formula() -> None:
    """rank_tolerance = max(m, n) · eps(dtype) · σ_max, and numerical_rank uses exactly it."""
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float64, torch.float32):
        m = torch.randn(7, 4, generator=g, dtype=dtype)
        s_max = float(torch.linalg.matrix_norm(m.double(), ord=2))
        tol = float(rank_tolerance(m))
        assert tol == pytest.approx(7 * torch.finfo(dtype).eps * s_max, rel=1e-5)
    # a singular value just above / just below the tolerance decides the count
    base = _with_singular_values([1.0, 1e-3], 6, 6, seed=2)
    tol = float(rank_tolerance(base))
    above = _with_singular_values([1.0, 1e-3, 10 * tol], 6, 6, seed=2)
    below = _with_singular_values([1.0, 1e-3, 0.01 * tol], 6, 6, seed=2)
    assert int(numerical_rank(above)) == 3
    assert int(numerical_rank(below)) == 2
    assert int(numerical_rank(above, tol=1e-2)) == 1


def test_rank_one_has_every_rank_one() -> None:
    """An outer product u vᵀ: stable, effective and numerical rank are all 1."""
    g = torch.Generator().manual_seed(3)
    u = torch.randn(6, 1, generator=g, dtype=torch.float64)
    v = torch.randn(1, 9, generator=g, dtype=torch.float64)
    m = u @ v
    assert int(numerical_rank(m)) == 1
    assert float(stable_rank(m)) == pytest.approx(1.0, abs=1e-12)
    assert float(effective_rank(m)) == pytest.approx(1.0, abs=1e-9)


def test_equal_singular_values_make_every_rank_equal() -> None:
    """Identity I_n: every notion is n; r equal singular values in a bigger matrix: every one r."""
    for n in (1, 4, 17):
        eye = torch.eye(n, dtype=torch.float64)
        assert float(effective_rank(eye)) == pytest.approx(n)
        assert float(stable_rank(eye)) == pytest.approx(n)
        assert int(numerical_rank(eye)) == n
    m = _with_singular_values([2.5] * 3, 8, 5, seed=4)
    assert float(effective_rank(m)) == pytest.approx(3.0, rel=1e-9)
    assert float(stable_rank(m)) == pytest.approx(3.0, rel=1e-9)


def test_effective_and_stable_rank_by_hand() -> None:
    """σ = (3, 1): srank = 10/9, erank = exp(H(3/4, 1/4))."""
    m = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert float(stable_rank(m)) == pytest.approx(10 / 9)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert float(effective_rank(m)) == pytest.approx(math.exp(h))


matrices = st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
    lambda shape: arrays(
        np.float64,
        shape,
        elements=st.floats(-100, 100, allow_nan=False, allow_subnormal=False),
    )
)


@settings(max_examples=80, deadline=None)
@given(a=matrices)
def test_rank_inequalities(a: np.ndarray) -> None:
    """1 ≤ srank ≤ (Σσ)²/Σσ² ≤ erank ≤ numerical rank (up to rounding), for arbitrary matrices."""
    m = torch.from_numpy(a)
    s = singular_values(m)
    if float(s[0]) == 0.0:
        with pytest.raises(ValueError, match="zero matrix"):
            stable_rank(m)
        assert int(numerical_rank(m)) == 0
        return
    srank, erank = float(stable_rank(m)), float(effective_rank(m))
    r = s / s[0]  # scale-free, so that squares of tiny entries do not underflow
    middle = float(r.sum() ** 2 / (r**2).sum())
    k = int(numerical_rank(m))
    assert srank >= 1.0
    assert srank <= middle * (1 + SLACK)
    assert middle <= erank * (1 + SLACK)
    assert erank <= k * (1 + SLACK)
    assert k <= min(a.shape)


def test_rank_of_product_at_most_min_rank() -> None:
    """rank(A B) ≤ min(rank A, rank B) for factors of chosen ranks, including a zero overlap."""
    g = torch.Generator().manual_seed(5)
    for ra, rb in [(2, 5), (5, 2), (4, 4), (6, 6)]:
        a = torch.randn(9, ra, generator=g, dtype=torch.float64) @ torch.randn(
            ra, 6, generator=g, dtype=torch.float64
        )
        b = torch.randn(6, rb, generator=g, dtype=torch.float64) @ torch.randn(
            rb, 7, generator=g, dtype=torch.float64
        )
        assert int(numerical_rank(a)) == ra and int(numerical_rank(b)) == rb
        assert int(numerical_rank(a @ b)) == min(ra, rb)  # generic factors reach the bound
    # the bound can be strict: B's column space inside A's null space gives AB = 0
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert int(numerical_rank(a @ b)) == 0


@pytest.mark.parametrize(("d_model", "n_heads"), [(16, 4), (12, 3), (8, 1), (6, 6)])
def test_qk_forms_have_rank_d_head_for_random_weights(d_model: int, n_heads: int) -> None:
    """Every head's W_Q^h W_K^hᵀ (d_model × d_model) has numerical rank exactly d_head."""
    g = torch.Generator().manual_seed(d_model * n_heads)
    w_q = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    w_k = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    forms = qk_matrices(w_q, w_k, n_heads)
    assert forms.shape == (n_heads, d_model, d_model)
    assert numerical_rank(forms).tolist() == [d_model // n_heads] * n_heads
    # the same in float32 (its own epsilon) and batched over layers
    stacked = torch.stack([w_q, 2 * w_q]).float(), torch.stack([w_k, -w_k]).float()
    assert (numerical_rank(qk_matrices(*stacked, n_heads)) == d_model // n_heads).all()


def test_ov_forms_have_rank_d_head_for_random_weights() -> None:
    """W_V^h W_O^h has rank d_head; head h uses columns of W_V and rows of W_O."""
    g = torch.Generator().manual_seed(6)
    d_model, n_heads, d_head = 12, 4, 3
    w_v = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    w_o = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    forms = ov_matrices(w_v, w_o, n_heads)
    assert numerical_rank(forms).tolist() == [d_head] * n_heads
    # multi-head output = concat_h(x W_V^h) W_O = Σ_h x W_V^h W_O^h
    x = torch.randn(5, d_model, generator=g, dtype=torch.float64)
    torch.testing.assert_close((x @ w_v) @ w_o, sum(x @ f for f in forms))
    h = 2
    sl = slice(h * d_head, (h + 1) * d_head)
    torch.testing.assert_close(forms[h], w_v[:, sl] @ w_o[sl, :])


def test_qk_form_reproduces_attention_scores() -> None:
    """x_i W_QK^h x_jᵀ equals the dot product of head h's query and key, for every head."""
    g = torch.Generator().manual_seed(7)
    d_model, n_heads = 8, 2
    d_head = d_model // n_heads
    w_q = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    w_k = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    x = torch.randn(5, d_model, generator=g, dtype=torch.float64)
    q = (x @ w_q).reshape(5, n_heads, d_head).transpose(0, 1)  # (H, T, d_head)
    k = (x @ w_k).reshape(5, n_heads, d_head).transpose(0, 1)
    scores = q @ k.transpose(-1, -2)  # (H, T, T)
    torch.testing.assert_close(x @ qk_matrices(w_q, w_k, n_heads) @ x.T, scores)


def test_score_unchanged_along_key_null_space() -> None:
    """Moving a key along the null space of W_K^hᵀ leaves every head-h score unchanged."""
    g = torch.Generator().manual_seed(8)
    d_model, n_heads = 10, 5
    w_q = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    w_k = torch.randn(d_model, d_model, generator=g, dtype=torch.float64)
    h, d_head = 1, d_model // n_heads
    w_k_h = w_k[:, h * d_head : (h + 1) * d_head]
    null = torch.linalg.svd(w_k_h.T).Vh[d_head:]  # rows span {y : y W_K^h = 0}
    assert null.shape[0] == d_model - d_head
    form = qk_matrices(w_q, w_k, n_heads)[h]
    x_i = torch.randn(d_model, generator=g, dtype=torch.float64)
    x_j = torch.randn(d_model, generator=g, dtype=torch.float64)
    moved = x_j + torch.randn(d_model - d_head, generator=g, dtype=torch.float64) @ null
    torch.testing.assert_close(x_i @ form @ moved, x_i @ form @ x_j)


def test_batched_equals_one_by_one() -> None:
    """Leading dims are a batch: each entry equals the single-matrix result."""
    g = torch.Generator().manual_seed(9)
    ms = torch.randn(2, 3, 5, 4, generator=g)
    summary = rank_summary(ms)
    for i in range(2):
        for j in range(3):
            one = ms[i, j]
            assert summary["numerical_rank"][i, j] == numerical_rank(one)
            torch.testing.assert_close(summary["effective_rank"][i, j], effective_rank(one))
            torch.testing.assert_close(summary["stable_rank"][i, j], stable_rank(one))
            torch.testing.assert_close(summary["rank_tolerance"][i, j], rank_tolerance(one))
    assert summary["sigma_max"].shape == (2, 3)
    # a per-matrix tolerance tensor broadcasts over the batch
    assert numerical_rank(ms, tol=torch.full((2, 3), 1e6)).eq(0).all()


def test_half_precision_is_analysed_in_float32() -> None:
    """bfloat16 weights: SVD and QK product in float32, tolerance with float32's epsilon."""
    g = torch.Generator().manual_seed(10)
    a = torch.randn(16, 2, generator=g).bfloat16()
    b = torch.randn(2, 16, generator=g).bfloat16()
    assert singular_values(a).dtype == torch.float32
    eps32 = torch.finfo(torch.float32).eps
    assert float(rank_tolerance(a)) == pytest.approx(16 * eps32 * float(singular_values(a)[0]))
    assert int(numerical_rank(a.float() @ b.float())) == 2  # products of bf16 values, fp32 sums
    # 64-wide bfloat16 heads: the QK forms keep rank d_head (bfloat16's eps would give ~6)
    w_q = torch.randn(64, 64, generator=g).bfloat16()
    w_k = torch.randn(64, 64, generator=g).bfloat16()
    forms = qk_matrices(w_q, w_k, 8)
    assert forms.dtype == torch.float32
    assert numerical_rank(forms).tolist() == [8] * 8


def test_bad_inputs_raise() -> None:
    """Non-tensors, integer/1-D/empty tensors, negative tol, zero matrices, bad head splits."""
    with pytest.raises(TypeError, match=r"m must be a torch\.Tensor"):
        numerical_rank([[1.0]])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating dtype"):
        numerical_rank(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="rows, cols"):
        stable_rank(torch.ones(3))
    with pytest.raises(ValueError, match="rows, cols"):
        effective_rank(torch.ones(0, 3))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        numerical_rank(torch.eye(2), tol=-1.0)
    with pytest.raises(ValueError, match="zero matrix"):
        effective_rank(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="not divisible by n_heads=3"):
        qk_matrices(torch.ones(4, 4), torch.ones(4, 4), 3)
    with pytest.raises(ValueError, match="n_heads must be >= 1, got 0"):
        qk_matrices(torch.ones(4, 4), torch.ones(4, 4), 0)
    with pytest.raises(ValueError, match="same shape"):
        qk_matrices(torch.ones(4, 4), torch.ones(4, 8), 2)
    with pytest.raises(ValueError, match="transposed"):
        ov_matrices(torch.ones(4, 8), torch.ones(4, 8), 2)
