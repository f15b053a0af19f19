"""Low-rank attention: Nyström, Linformer, the truncated SVD (Eckart–Young) and softmax's rank.

The claims tested are those of docs/derivations/low-rank-attention.md.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.analysis.rank import numerical_rank
from scratchformer.functional.attention import scaled_dot_product_attention
from scratchformer.functional.lowrank import (
    eckart_young_error,
    linformer_attention,
    linformer_weights,
    newton_schulz_pinv,
    nystrom_attention,
    nystrom_factors,
    nystrom_weights,
    relative_frobenius_error,
    segment_means,
    segment_means_matrix,
    truncated_svd,
)
from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.lowrank import LinformerAttention

F64 = torch.float64


def _qkv(n: int, d: int, seed: int, batch: tuple[int, ...] = (2, 3), L: int | None = None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, n if L is None else L, d, generator=g, dtype=F64)
    k = torch.randn(*batch, n, d, generator=g, dtype=F64)
    v = torch.randn(*batch, n, d + 1, generator=g, dtype=F64)
    return q, k, v


def _attention_matrix(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


# ----------------------------------------------------------------------------- Nyström


@pytest.mark.parametrize("n,d", [(6, 3), (10, 4), (16, 8)])
def test_nystrom_with_n_landmarks_is_exact_attention(n, d):
    q, k, v = _qkv(n, d, seed=n)
    exact = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(nystrom_attention(q, k, v, n, pinv="exact"), exact,
                               rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(nystrom_weights(q, k, n), _attention_matrix(q, k),
                               rtol=1e-7, atol=1e-8)


def test_nystrom_right_to_left_equals_the_matrix_times_v():
    q, k, v = _qkv(12, 4, seed=3)
    for pinv in ("exact", "newton"):
        torch.testing.assert_close(nystrom_attention(q, k, v, 4, pinv=pinv),
                                   nystrom_weights(q, k, 4, pinv=pinv) @ v)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_nystrom_rank_at_most_landmarks_and_never_beats_eckart_young(m):
    q, k, _ = _qkv(12, 4, seed=10 + m)
    approx = nystrom_weights(q, k, m)
    assert int(numerical_rank(approx).max()) <= m
    a = _attention_matrix(q, k)
    assert (relative_frobenius_error(approx, a) >= eckart_young_error(a, m) - 1e-12).all()


def test_nystrom_factor_shapes():
    q, k, _ = _qkv(9, 4, seed=0, L=7)
    f, a_pinv, b = nystrom_factors(q, k, 3)
    assert f.shape == (2, 3, 7, 3) and a_pinv.shape == (2, 3, 3, 3) and b.shape == (2, 3, 3, 9)


def test_newton_schulz_converges_to_the_moore_penrose_inverse():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(4, 8, 8, generator=g, dtype=F64), -1)
    z = newton_schulz_pinv(a, iters=30)
    torch.testing.assert_close(z, torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    # the four Penrose conditions
    torch.testing.assert_close(a @ z @ a, a)
    torch.testing.assert_close(z @ a @ z, z)
    torch.testing.assert_close((a @ z).mT, a @ z)
    torch.testing.assert_close((z @ a).mT, z @ a)
    # and it does converge: a few steps are further from A⁺ than many
    far = (newton_schulz_pinv(a, iters=1) - z).abs().max()
    assert far > (newton_schulz_pinv(a, iters=10) - z).abs().max()


def test_newton_schulz_on_a_singular_matrix_gives_the_pseudo_inverse():
    u = torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    a = u @ u.T  # rank 1
    torch.testing.assert_close(newton_schulz_pinv(a, iters=40), torch.linalg.pinv(a))


def test_segment_means():
    x = torch.arange(24, dtype=F64).view(6, 4)
    torch.testing.assert_close(segment_means(x, 3), x.view(3, 2, 4).mean(1))
    torch.testing.assert_close(segment_means(x, 6), x)
    s = segment_means_matrix(7, 3, F64)
    torch.testing.assert_close(s.sum(-1), torch.ones(3, dtype=F64))
    assert ((s > 0).sum(-1) >= 2).all() and ((s > 0).sum(0) == 1).all()  # a partition


# ----------------------------------------------------------------------------- Linformer


@pytest.mark.parametrize("n,d,L", [(5, 3, 5), (8, 4, 3)])
def test_linformer_with_identity_projections_is_exact_attention(n, d, L):
    q, k, v = _qkv(n, d, seed=n, L=L)
    eye = torch.eye(n, dtype=F64)
    out, matrix = linformer_attention(q, k, v, eye, eye, return_matrix=True)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(matrix, _attention_matrix(q, k))


def test_linformer_matrix_has_rank_at_most_k_and_rows_summing_to_one_for_pooling():
    q, k, v = _qkv(12, 4, seed=5)
    pool = segment_means_matrix(12, 3, F64)
    out, matrix = linformer_attention(q, k, v, pool, pool, return_matrix=True)
    assert int(numerical_rank(matrix).max()) <= 3
    torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 3, 12, dtype=F64))
    torch.testing.assert_close(out, matrix @ v)
    assert linformer_weights(q, k, pool).shape == (2, 3, 12, 3)


def test_linformer_module_with_identity_projections_equals_multi_head_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    lin = LinformerAttention(12, 3, seq_len=7, k=7).double()
    with torch.no_grad():
        for name in ("q", "k", "v", "o"):
            getattr(lin, f"w_{name}").copy_(getattr(mha, f"w_{name}"))
            getattr(lin, f"b_{name}").copy_(getattr(mha, f"b_{name}"))
        lin.E.copy_(torch.eye(7))
        lin.F.copy_(torch.eye(7))
    x = torch.randn(2, 7, 12, dtype=F64)
    out, weights = lin(x, need_weights=True)
    ref, ref_weights = mha(x, need_weights=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(weights, ref_weights)


def test_linformer_module_trains_its_projections():
    torch.manual_seed(0)
    lin = LinformerAttention(8, 2, seq_len=10, k=3, bias=False)
    lin(torch.randn(4, 10, 8)).square().mean().backward()
    assert lin.E.grad is not None and lin.E.grad.abs().sum() > 0
    assert lin.F.grad is not None and lin.F.grad.abs().sum() > 0
    assert lin.E.shape == lin.F.shape == (3, 10)


# ----------------------------------------------------------------------------- Eckart–Young


@settings(max_examples=30, deadline=None)
@given(m=st.integers(2, 9), n=st.integers(2, 9), seed=st.integers(0, 2**16), data=st.data())
def test_truncated_svd_error_is_the_discarded_singular_values(m, n, seed, data):
    r = data.draw(st.integers(0, min(m, n)))
    a = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = torch.linalg.svdvals(a)
    expected = math.sqrt(float((s[r:] ** 2).sum())) / math.sqrt(float((s**2).sum()))
    approx = truncated_svd(a, r)
    assert int(numerical_rank(approx)) == r
    assert float(relative_frobenius_error(approx, a)) == pytest.approx(expected, abs=1e-12)
    assert float(eckart_young_error(a, r)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_no_random_rank_r_matrix_beats_the_truncated_svd(seed):
    g = torch.Generator().manual_seed(seed)
    q, k, _ = _qkv(10, 3, seed=seed, batch=())
    a = _attention_matrix(q, k)
    for r in (1, 2, 4, 7):
        best = float(eckart_young_error(a, r))
        # random factors, random projections of A, and least-squares fits in random subspaces
        for _ in range(20):
            x = torch.randn(10, r, generator=g, dtype=F64)
            y = torch.randn(r, 10, generator=g, dtype=F64)
            basis, _ = torch.linalg.qr(torch.randn(10, r, generator=g, dtype=F64))
            for candidate in (x @ y, basis @ basis.T @ a, a @ basis @ basis.T):
                assert float(relative_frobenius_error(candidate, a)) >= best - 1e-12
        # and the optimum is attained
        assert float(relative_frobenius_error(truncated_svd(a, r), a)) == pytest.approx(best)


# ----------------------------------------------------------------------------- softmax's rank


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n,d", [(12, 2), (16, 2), (16, 4)])
def test_softmax_of_low_rank_scores_is_numerically_full_rank(seed, n, d):
    q, k, _ = _qkv(n, d, seed=seed, batch=())
    scores = q @ k.T / math.sqrt(d)
    assert int(numerical_rank(scores)) == d < n
    exp_scores = torch.exp(scores)
    a = torch.softmax(scores, dim=-1)
    assert int(numerical_rank(exp_scores)) == n
    assert int(numerical_rank(a)) == n  # D⁻¹ exp(S) has the rank of exp(S)


@pytest.mark.parametrize("seed", range(3))
def test_exp_of_a_rank_one_matrix_is_nonsingular_in_exact_arithmetic(seed):
    """exp(u_i v_j) = x_i^{v_j} with x_i = e^{u_i}: a generalised Vandermonde matrix whose
    determinant is positive once u and v are sorted increasingly (checked at 60 digits)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.sort(torch.randn(7, generator=g, dtype=F64)).values.tolist()
    v = torch.sort(torch.randn(7, generator=g, dtype=F64)).values.tolist()
    with mpmath.workdps(60):
        m = mpmath.matrix([[mpmath.exp(mpmath.mpf(ui) * mpmath.mpf(vj)) for vj in v] for ui in u])
        assert mpmath.det(m) > 0


# ----------------------------------------------------------------------------- errors


def test_bad_ranks_and_shapes_are_rejected_with_the_argument_named():
    q, k, v = _qkv(6, 3, seed=0)
    a = _attention_matrix(q, k)
    with pytest.raises(ValueError, match=r"rank must be <= 6, got 7"):
        truncated_svd(a, 7)
    with pytest.raises(ValueError, match="rank must be"):
        eckart_young_error(a, -1)
    with pytest.raises(TypeError, match="rank must be an int"):
        truncated_svd(a, 2.0)
    with pytest.raises(ValueError, match=r"num_landmarks must be <= 6, got 8"):
        nystrom_weights(q, k, 8)
    with pytest.raises(ValueError, match="pinv must be one of"):
        nystrom_attention(q, k, v, 2, pinv="svd")
    with pytest.raises(ValueError, match=r"E must have shape \(\.\.\., k, n=6\)"):
        linformer_attention(q, k, v, torch.eye(5, dtype=F64), torch.eye(6, dtype=F64))
    with pytest.raises(ValueError, match="same k"):
        linformer_attention(q, k, v, torch.ones(2, 6, dtype=F64), torch.ones(3, 6, dtype=F64))
    with pytest.raises(ValueError, match="feature size"):
        nystrom_weights(q, k[..., :2], 2)
    with pytest.raises(ValueError, match="value must have as many rows"):
        nystrom_attention(q, k, v[..., :5, :], 2)
    with pytest.raises(ValueError, match="approx must have the shape"):
        relative_frobenius_error(a[..., :5], a)
    with pytest.raises(ValueError, match="a must be square"):
        newton_schulz_pinv(a[..., :5])
    with pytest.raises(TypeError, match=r"query must be a torch\.Tensor"):
        nystrom_weights([[1.0]], k, 1)
    with pytest.raises(ValueError, match="seq_len=7"):
        LinformerAttention(8, 2, seq_len=7, k=3)(torch.randn(1, 6, 8))
    with pytest.raises(ValueError, match="k must be <= seq_len=7"):
        LinformerAttention(8, 2, seq_len=7, k=8)
    with pytest.raises(ValueError, match="d_model must be divisible"):
        LinformerAttention(9, 2, seq_len=7, k=3)


# ----------------------------------------------------------------------------- the study


def test_study_runs_tiny_and_respects_eckart_young(tmp_path, tiny_char_lm):
    import dataclasses

    from scratchformer.experiments.registry import get
    from scratchformer.experiments.runner import run_study

    study = get("lowrank.approximation")
    assert study.config("full").context_len > study.config("quick").context_len
    n = tiny_char_lm["context_len"]
    d_head = tiny_char_lm["d_model"] // tiny_char_lm["n_heads"]
    cfg = dataclasses.replace(study.config("quick"), **{
        **tiny_char_lm, "n_layers": 1, "eval_every": 6, "ranks": (1, 3, n), "eval_windows": 3,
        "fit_windows": 2, "fit_steps": 3})
    m = run_study(study, cfg, tmp_path)["metrics"]
    assert m["model"]["n"] == n and m["model"]["d_head"] == d_head
    assert m["replay_max_abs_logit_error"] < 1e-10
    for target, errs in m["relative_frobenius_error"].items():
        for method in ("nystrom", "nystrom_pinv", "linformer"):  # rank <= r: not below SVD
            assert all(e >= s - 1e-9 for e, s in zip(errs[method], errs["svd"], strict=True))
        assert errs["svd"][-1] < 1e-10, target  # rank n: exact
    bi = m["relative_frobenius_error"]["bidirectional"]
    assert bi["nystrom_pinv"][-1] < 1e-6 and bi["linformer"][-1] < 1e-10  # r = n: exact
    assert abs(m["val_loss_change"]["svd"][-1]) < 1e-10
    for layer in m["attention_rank"]["layers"]:
        assert layer["scores_numerical_rank_max"] <= d_head
        assert layer["causal"]["numerical_rank_min"] == n  # triangular, positive diagonal
    out = tmp_path / "lowrank.approximation"
    for name in ("error_vs_rank.png", "loss_vs_rank.png", "spectrum.png"):
        assert (out / name).is_file()


def test_study_config_rejects_bad_settings_when_built():
    import dataclasses

    from scratchformer.experiments.registry import StudyError, get

    study = get("lowrank.approximation")
    with pytest.raises(StudyError, match=r"ranks must be .* context_len=64\], got \(1, 65\)"):
        study.config("quick", {"ranks": "1,65"})
    assert study.config("full", {"ranks": "1,128"}).ranks == (1, 128)  # its context is 128
    with pytest.raises(StudyError, match="fit_batch must be >= 1, got 0"):
        study.config("quick", {"fit_batch": "0"})
    with pytest.raises(StudyError, match=r"fit_lr must be > 0\.0, got -0\.1"):
        study.config("quick", {"fit_lr": "-0.1"})
    with pytest.raises(ValueError, match=r"ranks must be .*, got \(\)"):
        dataclasses.replace(study.config("quick"), ranks=())
    with pytest.raises(ValueError, match=r"ranks must be .* context_len=8\]"):
        dataclasses.replace(study.config("quick"), context_len=8)  # ranks 16 and 64 too long
