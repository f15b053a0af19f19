r"""Principal component analysis from one SVD.

For data $X \in \mathbb{R}^{n \times d}$ (one sample per row) with column means $\mu$, centre
$X_c = X - \mathbf{1}\mu^\top$ and take the thin SVD $X_c = U \Sigma V^\top$. Then

* the principal directions are the rows of $V^\top$ (the right singular vectors), ordered by
  $\sigma_1 \ge \sigma_2 \ge \dots$;
* the sample covariance is $C = X_c^\top X_c / (n-1) = V \,\Sigma^2/(n-1)\, V^\top$, so its
  eigenvalues — the variances along the directions — are $\lambda_i = \sigma_i^2 / (n-1)$;
* the coordinates of the samples are $Z = X_c V = U \Sigma$, and $X = Z V^\top + \mathbf{1}\mu^\top$
  when every component is kept.

So PCA *is* the SVD of the centred matrix. The spectra tracked elsewhere (`analysis.spectra`,
`analysis.rank`) are of the *uncentred* matrix; the two differ by the mean direction, which for
an embedding table is often the largest single singular direction.

Never forming $C$ keeps the accuracy of the SVD: squaring singular values in $X_c^\top X_c$ loses
the small ones to rounding first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scratchformer.validation import check_optional_int

__all__ = ["PCA", "fit_pca"]


@dataclass(frozen=True)
class PCA:
    """A fitted PCA: mean, orthonormal component rows, and the variance each one explains."""

    mean: Tensor  # (d,)
    components: Tensor  # (k, d), orthonormal rows, by decreasing variance
    singular_values: Tensor  # (k,) of the centred data
    explained_variance: Tensor  # (k,) = singular_values² / (n - 1)
    explained_variance_ratio: Tensor  # (k,) share of the total variance (all d directions)
    n_samples: int

    @property
    def n_components(self) -> int:
        """How many components were kept."""
        return int(self.components.shape[0])

    def _check(self, x: object, width: int, name: str) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
            got = (f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor)
                   else type(x).__name__)
            raise TypeError(f"{name} must be a 2-D floating tensor, got {got}")
        if x.shape[1] != width:
            raise ValueError(f"{name} must have {width} columns, got shape {tuple(x.shape)}")
        return x.to(self.mean.dtype)

    def transform(self, x: Tensor) -> Tensor:
        """Coordinates (n, k) of the rows of ``x`` (n, d) along the components."""
        x = self._check(x, self.mean.shape[0], "x")
        return (x - self.mean) @ self.components.T

    def inverse_transform(self, z: Tensor) -> Tensor:
        """Points (n, d) with coordinates ``z`` (n, k); exact inverse when k = rank."""
        z = self._check(z, self.n_components, "z")
        return z @ self.components + self.mean


def fit_pca(x: Tensor, n_components: int | None = None) -> PCA:
    """PCA of the rows of ``x`` (n, d) by SVD of the centred matrix; keep ``n_components``.

    ``n_components`` defaults to min(n, d). Each component's sign is fixed so that its entry of
    largest magnitude is positive, so the result does not depend on the SVD routine's choice.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a 2-D floating tensor (samples, features), got {got}")
    n, d = x.shape
    if n < 2 or d < 1:
        raise ValueError(f"x needs >= 2 rows and >= 1 column, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite; it contains NaN or inf")
    k_max = min(n, d)
    k = check_optional_int("n_components", n_components)
    k = k_max if k is None else k
    if k > k_max:
        raise ValueError(f"n_components must be <= min(n, d) = {k_max}, got {k}")
    x = x.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    mean = x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    # Sign convention: the largest-|.| entry of each direction is positive.
    pivot = vh.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vh.gather(1, pivot))
    signs[signs == 0] = 1
    vh = vh * signs
    variance = s**2 / (n - 1)
    total = variance.sum()
    ratio = variance / total if total > 0 else torch.zeros_like(variance)
    return PCA(mean=mean, components=vh[:k], singular_values=s[:k],
               explained_variance=variance[:k], explained_variance_ratio=ratio[:k],
               n_samples=n)
