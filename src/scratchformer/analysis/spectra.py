"""Spectral summaries of a matrix: how many directions does it really use?

``X`` with rows as vectors (positions, tokens, ...) has Gram matrix ``G = X X^T``, whose nonzero
eigenvalues are the squared singular values of ``X``. Several numbers summarise that spectrum:
the count holding a fraction of the energy (trace), the participation ratio, the entropy
(Roy-Vetterli) effective rank, and the numerical rank. All work in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchformer.analysis import rank
from scratchformer.validation import check_real

__all__ = [
    "cumulative_energy",
    "energy_rank",
    "entropy_effective_rank",
    "gram_eigenvalues",
    "numerical_rank",
    "participation_ratio",
    "singular_values",
    "toeplitz_deviation",
]


def _check_matrix(name: str, x: object) -> Tensor:
    """Return ``x`` as a float64 2-D tensor, or raise naming ``name``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    return x.to(torch.float64)


def _check_spectrum(eigenvalues: object) -> Tensor:
    """Return non-negative eigenvalues as float64, descending; reject negatives beyond rounding."""
    if not isinstance(eigenvalues, Tensor):
        raise TypeError(f"eigenvalues must be a torch.Tensor, got {type(eigenvalues).__name__}")
    if eigenvalues.ndim != 1 or eigenvalues.numel() == 0:
        raise ValueError(
            f"eigenvalues must be a non-empty 1-D tensor, got shape {tuple(eigenvalues.shape)}"
        )
    lam = eigenvalues.to(torch.float64)
    scale = lam.abs().max()
    if not torch.isfinite(lam).all():
        raise ValueError("eigenvalues must be finite")
    if (lam < -1e-10 * scale).any():
        raise ValueError(
            f"eigenvalues must be >= 0 (a Gram matrix is positive semi-definite), "
            f"got minimum {lam.min().item():.3g}"
        )
    if scale == 0:
        raise ValueError("eigenvalues are all zero: the spectrum has no energy to measure")
    return torch.sort(lam.clamp_min(0.0), descending=True).values


def singular_values(x: Tensor) -> Tensor:
    """Singular values of the 2-D ``x`` in float64, largest first (length ``min(x.shape)``)."""
    return rank.singular_values(_check_matrix("x", x))


def gram_eigenvalues(x: Tensor) -> Tensor:
    """Eigenvalues of ``x @ x.T`` that can be nonzero, largest first (``min(x.shape)`` of them).

    Computed as squared singular values of ``x``: more accurate than eigendecomposing ``x x^T``.
    """
    return singular_values(x) ** 2


def cumulative_energy(eigenvalues: Tensor) -> Tensor:
    """Fraction of the total (trace) held by the ``r`` largest eigenvalues, for r = 1, 2, ..."""
    lam = _check_spectrum(eigenvalues)
    return torch.cumsum(lam, 0) / lam.sum()


def energy_rank(eigenvalues: Tensor, fraction: float = 0.99) -> int:
    """Fewest eigenvalues whose sum reaches ``fraction`` of the total (e.g. 99% of the energy)."""
    fraction = check_real("fraction", fraction, minimum=0, maximum=1, min_inclusive=False)
    cum = cumulative_energy(eigenvalues)
    # a tiny slack so that fraction=1.0 is not defeated by the rounding of the cumulative sum
    target = torch.tensor([fraction - 1e-12], dtype=cum.dtype, device=cum.device)
    return int(torch.searchsorted(cum, target)) + 1


def participation_ratio(eigenvalues: Tensor) -> float:
    """``(sum lam)^2 / sum lam^2``: r for r equal eigenvalues, 1 for a single spike."""
    lam = _check_spectrum(eigenvalues)
    return float(lam.sum() ** 2 / (lam**2).sum())


def entropy_effective_rank(eigenvalues: Tensor) -> float:
    """``exp(H(p))`` with ``p = lam / sum lam`` (Roy & Vetterli 2007): r for r equal eigenvalues."""
    lam = _check_spectrum(eigenvalues)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def numerical_rank(x: Tensor, rtol: float | None = None) -> int:
    """Number of singular values of ``x`` above ``rtol * largest``: `rank.numerical_rank` of the
    float64 matrix with a relative threshold.

    Default ``rtol = max(x.shape) * eps(float64)``, the usual threshold below which a direction
    cannot be told apart from rounding error (`rank.rank_tolerance`).
    """
    x = _check_matrix("x", x)
    if rtol is not None:
        rtol = check_real("rtol", rtol, minimum=0)
    if x.numel() == 0:
        return 0
    tol = None if rtol is None else rtol * float(singular_values(x)[0])
    return int(rank.numerical_rank(x, tol))


def toeplitz_deviation(matrix: Tensor) -> float:
    """``max |M[p+1, q+1] - M[p, q]|``: zero exactly when every diagonal of ``M`` is constant.

    Equality along the unit shift implies ``M[p+k, q+k] = M[p, q]`` for every ``k`` (induction).
    """
    m = _check_matrix("matrix", matrix)
    if min(m.shape) < 2:
        return 0.0
    return float((m[1:, 1:] - m[:-1, :-1]).abs().max())
