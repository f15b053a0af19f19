"""The derived attention gradient (docs/derivations/attention-gradient.md), checked three ways:
symbolically with SymPy, numerically with gradcheck, and against autograd of the plain forward.
"""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.experiments.attention import gradcheck_suite
from scratchformer.functional.attention import (
    AttentionFunction,
    attention_with_derived_backward,
    masked_softmax,
)
from scratchformer.functional.masks import causal_mask


def _closed_form(Q, K, V, W, c):
    """The derived formulas, written with SymPy matrices: returns A, dQ, dK, dV for dO = W."""
    L, S = Q.rows, K.rows
    P = c * Q * K.T
    A = sp.Matrix(L, S, lambda i, j: sp.exp(P[i, j]) / sum(sp.exp(P[i, m]) for m in range(S)))
    dV = A.T * W
    dA = W * V.T
    dP = sp.Matrix(
        L, S, lambda i, j: A[i, j] * (dA[i, j] - sum(dA[i, m] * A[i, m] for m in range(S)))
    )
    return A, c * dP * K, c * dP.T * Q, dV


def _symbols(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{i}{j}", real=True))


def test_sympy_gradient_matches_closed_form_exactly() -> None:
    """Symbolic L=2, S=2, E=2, Ev=2 with symbolic scale and dO: d(loss)/dX − formula ≡ 0."""
    Q, K, V, W = _symbols("q", 2, 2), _symbols("k", 2, 2), _symbols("v", 2, 2), _symbols("w", 2, 2)
    c = sp.Symbol("c", positive=True)
    A, dQ, dK, dV = _closed_form(Q, K, V, W, c)
    O = A * V
    loss = sum(W[i, j] * O[i, j] for i in range(2) for j in range(2))  # so that dO = W
    for X, G in ((Q, dQ), (K, dK), (V, dV)):
        for i in range(X.rows):
            for j in range(X.cols):
                residual = sp.diff(loss, X[i, j]) - G[i, j]
                # Over a common denominator the numerator, expanded, must vanish identically.
                assert sp.expand(sp.numer(sp.together(residual))) == 0


def test_sympy_gradient_matches_closed_form_numerically() -> None:
    """A non-square case (L=2, S=3, E=2, Ev=1): residuals vanish to 40 digits at a point."""
    Q, K, V, W = _symbols("q", 2, 2), _symbols("k", 3, 2), _symbols("v", 3, 1), _symbols("w", 2, 1)
    c = sp.Rational(3, 5)
    A, dQ, dK, dV = _closed_form(Q, K, V, W, c)
    O = A * V
    loss = sum(W[i, 0] * O[i, 0] for i in range(2))
    syms = [*Q, *K, *V, *W]
    # 50-digit Floats make SymPy evaluate numerically as it substitutes (fast, no simplify).
    point = {s: sp.Float(sp.Rational((7 * n) % 11 - 5, 4), 50) for n, s in enumerate(syms)}
    for X, G in ((Q, dQ), (K, dK), (V, dV)):
        for i in range(X.rows):
            for j in range(X.cols):
                residual = (sp.diff(loss, X[i, j]) - G[i, j]).xreplace(point)
                assert residual.is_number and abs(residual) < sp.Float(1e-40)
    # Sanity check that the test can fail: a formula missing the rowsum term is far off.
    wrong = c * (A.multiply_elementwise(W * V.T)) * K
    assert abs((sp.diff(loss, Q[0, 0]) - wrong[0, 0]).xreplace(point)) > sp.Float(1e-3)


def test_softmax_jacobian_is_diag_minus_outer() -> None:
    """∂softmax(s)/∂s = diag(a) − a aᵀ, the matrix the derivation applies row by row."""
    s = torch.randn(6, dtype=torch.float64)
    a = torch.softmax(s, 0)
    jac = torch.autograd.functional.jacobian(lambda x: masked_softmax(x), s)
    assert torch.allclose(jac, torch.diag(a) - torch.outer(a, a), atol=1e-15, rtol=0)


def test_rowsum_trick_equals_jacobian_product() -> None:
    """A ⊙ (dA − rowsum(dA ⊙ A)) = row-wise (diag(a) − aaᵀ) dA, and rowsum(dA⊙A) = rowsum(dO⊙O)."""
    g = torch.Generator().manual_seed(0)
    A = torch.softmax(torch.randn(5, 7, generator=g, dtype=torch.float64), -1)
    V = torch.randn(7, 3, generator=g, dtype=torch.float64)
    dO = torch.randn(5, 3, generator=g, dtype=torch.float64)
    O, dA = A @ V, dO @ V.T
    trick = A * (dA - (dA * A).sum(-1, keepdim=True))
    jacobians = torch.diag_embed(A) - A[:, :, None] * A[:, None, :]  # (L, S, S), never in code
    assert torch.allclose(trick, (jacobians @ dA[:, :, None])[..., 0], atol=1e-14, rtol=0)
    assert torch.allclose((dA * A).sum(-1), (dO * O).sum(-1), atol=1e-14, rtol=0)


def _plain_attention(q, k, v, scale, mask):
    """The forward pass with no custom backward: autograd differentiates it op by op."""
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf"))
            if mask.dtype == torch.bool
            else (scores + mask)
        )
    return masked_softmax(scores) @ v


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 8),
    S=st.integers(1, 8),
    E=st.integers(1, 6),
    Ev=st.integers(1, 6),
    mask_kind=st.sampled_from(["none", "bool", "float"]),
    broadcast_q=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_derived_backward_matches_autograd(L, S, E, Ev, mask_kind, broadcast_q, seed) -> None:
    """Derived dQ, dK, dV (and dM of a float mask) equal autograd of the plain forward."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)

    q = t(1, L, E) if broadcast_q else t(3, L, E)  # a broadcast q must get a summed gradient
    k, v = t(3, S, E), t(3, S, Ev)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(3, L, S, generator=g) > 0.5
        mask[..., S - 1] = True
    elif mask_kind == "float":
        mask = t(L, S)
    inputs = [x for x in (q, k, v, mask) if x is not None and x.requires_grad]
    grad_out = torch.randn(3, L, Ev, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(AttentionFunction.apply(q, k, v, 0.37, mask), inputs, grad_out)
    ref = torch.autograd.grad(_plain_attention(q, k, v, 0.37, mask), inputs, grad_out)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-12


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_gradcheck_attention_function(mask_kind: str) -> None:
    """Finite differences agree with the derived backward (float64), with and without a mask."""
    g = torch.Generator().manual_seed(11)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)

    q, k, v = t(2, 2, 4, 3), t(2, 2, 5, 3), t(2, 2, 5, 2)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(4, 5, generator=g) > 0.5
        mask[:, 0] = True
    elif mask_kind == "float":
        mask = t(2, 1, 4, 5)
    inputs = (q, k, v, mask) if mask_kind == "float" else (q, k, v)  # float mask: check dM too

    def fn(*xs: torch.Tensor) -> torch.Tensor:
        m = xs[3] if len(xs) == 4 else mask
        return attention_with_derived_backward(xs[0], xs[1], xs[2], scale=0.6, attn_mask=m)

    assert torch.autograd.gradcheck(fn, inputs)


def test_study_gradcheck_suite_passes() -> None:
    """The study's gradcheck problems (incl. a fully masked row and broadcast batches) pass."""
    assert gradcheck_suite() == dict.fromkeys(
        [
            "no_mask",
            "bool_mask",
            "bool_mask_fully_masked_row",
            "float_mask_with_grad",
            "broadcast_batch",
        ],
        True,
    )


def test_backward_saves_no_quadratic_jacobian() -> None:
    """Saved for backward: Q, K, V and A only, i.e. O(L·S) memory, no L×S×S Jacobian."""
    q = torch.randn(2, 6, 4, requires_grad=True)
    k = torch.randn(2, 9, 4, requires_grad=True)
    v = torch.randn(2, 9, 5, requires_grad=True)
    out = AttentionFunction.apply(q, k, v, 0.5, None)
    saved = out.grad_fn.saved_tensors
    shapes = [tuple(s.shape) for s in saved]
    assert shapes == [(2, 6, 4), (2, 9, 4), (2, 9, 5), (2, 6, 9)]


def test_derived_backward_refuses_double_backward() -> None:
    """The hand-written backward is first-order only and says so, rather than being wrong."""
    q = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    out = AttentionFunction.apply(q, k, v, 0.5, None)
    (dq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|twice"):
        dq.sum().backward()


def test_rows_with_one_visible_key_have_exactly_zero_query_gradient_in_float32() -> None:
    """A row with a single unmasked key has A = one-hot, so dP (hence dQ) is exactly 0.

    Holds bit for bit because δ = rowsum(dA ⊙ A) reuses the very dA it is subtracted from; the
    equivalent δ = rowsum(dO ⊙ O) rounds differently and leaves ~1e-7 residues here.
    """
    g = torch.Generator().manual_seed(12)
    q = torch.randn(3, 1, 64, generator=g, requires_grad=True)
    k = torch.randn(3, 40, 64, generator=g, requires_grad=True)
    v = torch.randn(3, 40, 64, generator=g, requires_grad=True)
    grad_out = torch.randn(3, 1, 64, generator=g)
    out = AttentionFunction.apply(q, k, v, 0.125, causal_mask(1, 40))  # query 0 sees key 0 only
    dq, dk = torch.autograd.grad(out, (q, k), grad_out)
    assert torch.equal(dq, torch.zeros_like(dq)) and torch.equal(dk, torch.zeros_like(dk))
