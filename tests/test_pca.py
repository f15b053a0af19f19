"""Our SVD-based PCA against a library implementation and against its own algebra.

The reference is scikit-learn's ``PCA`` when installed, else numpy's ``eigh`` of the sample
covariance; components are compared up to sign.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.analysis.pca import fit_pca


def _data(n: int, d: int, seed: int) -> torch.Tensor:
    """Rows with distinct variances along random directions (well-separated spectrum)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(1, -1, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    return x @ q.T + torch.randn(d, generator=g, dtype=torch.float64)


def _reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components (k, d), explained variance, ratio) from sklearn, else numpy eigh."""
    try:
        from sklearn import decomposition
    except ImportError:
        evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
        order = np.argsort(evals)[::-1][:k]
        return evecs[:, order].T, evals[order], evals[order] / evals.sum()
    sk = decomposition.PCA(n_components=k, svd_solver="full").fit(x)
    return sk.components_, sk.explained_variance_, sk.explained_variance_ratio_


def _match_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` with each row's sign flipped to agree with the same row of ``a``."""
    return b * np.sign(np.sum(a * b, axis=1, keepdims=True))


@pytest.mark.parametrize(("n", "d", "k"), [(200, 6, 6), (50, 12, 4), (8, 20, 7)])
def test_pca_matches_library(n, d, k):
    # (8, 20, 7): fewer samples than features; the centred rank is n - 1 = 7
    x = _data(n, d, seed=n + d)
    ours = fit_pca(x, k)
    comps, var, ratio = _reference(x.numpy(), k)
    np.testing.assert_allclose(_match_signs(ours.components.numpy(), comps),
                               ours.components.numpy(), atol=1e-8)
    np.testing.assert_allclose(ours.explained_variance.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ratio, rtol=1e-10)
    # transform agrees with the library's projection up to the same signs
    z_ref = (x.numpy() - x.numpy().mean(0)) @ comps.T
    z = ours.transform(x).numpy()
    np.testing.assert_allclose(np.abs(z), np.abs(z_ref), atol=1e-8)


def test_covariance_eigenvalues_are_squared_singular_values_over_n_minus_1():
    x = _data(40, 7, seed=3)
    p = fit_pca(x)
    cov_eig = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    torch.testing.assert_close(p.explained_variance, cov_eig, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p.explained_variance, p.singular_values**2 / 39)
    assert float(p.explained_variance_ratio.sum()) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_full_pca_round_trips_and_components_are_orthonormal(n, d, seed):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p = fit_pca(x)
    k = p.n_components
    torch.testing.assert_close(p.components @ p.components.T,
                               torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    # The centred rows lie in the span of the kept components (rank <= min(n - 1, d)),
    # so transform followed by inverse_transform reproduces x.
    torch.testing.assert_close(p.inverse_transform(p.transform(x)), x, atol=1e-9, rtol=0)
    # Coordinates are uncorrelated with the explained variances as their variances.
    z = p.transform(x)
    torch.testing.assert_close(z.T @ z / (n - 1), torch.diag(p.explained_variance),
                               atol=1e-9, rtol=0)


def test_truncated_reconstruction_error_is_the_dropped_variance():
    x = _data(100, 8, seed=1)
    full = fit_pca(x)
    p = fit_pca(x, 3)
    err = (p.inverse_transform(p.transform(x)) - x).square().sum() / (x.shape[0] - 1)
    assert float(err) == pytest.approx(float(full.explained_variance[3:].sum()), rel=1e-10)


def test_sign_convention_makes_the_largest_entry_positive():
    x = _data(30, 5, seed=2)
    for p in (fit_pca(x), fit_pca(-x)):
        rows = p.components
        assert bool((rows.gather(1, rows.abs().argmax(1, keepdim=True)) > 0).all())
    torch.testing.assert_close(fit_pca(x).components, fit_pca(-x).components)


def test_bad_input_is_rejected_early():
    with pytest.raises(TypeError, match="x must be a 2-D floating tensor"):
        fit_pca(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 2 rows"):
        fit_pca(torch.ones(1, 4))
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(torch.randn(5, 3), 4)
    with pytest.raises(ValueError, match="finite"):
        fit_pca(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    p = fit_pca(torch.randn(5, 3))
    with pytest.raises(ValueError, match="3 columns"):
        p.transform(torch.randn(2, 4))
