"""Layer normalisation and RMS normalisation written with plain tensor operations.

LayerNorm (Ba et al., 2016) centres each feature vector and divides by its standard deviation:

    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias,   var is the *biased* variance,

so before the affine map every output lies on the sphere of radius ``sqrt(d)`` inside the
hyperplane orthogonal to the all-ones vector. RMSNorm (Zhang & Sennrich, 2019) skips the
centring and the bias: ``y = x / sqrt(mean(x**2) + eps) * weight``, which puts the output on the
sphere of radius ``sqrt(d)`` (no hyperplane). Both act on the last dimension only, so they are
position-wise: every token is normalised on its own.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["layer_norm", "rms_norm"]


def _check_eps(eps: object) -> float:
    """Return ``eps`` as a finite float >= 0 (0 is allowed for exact-arithmetic checks)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__} {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def _check_input(x: object, name: str = "x") -> Tensor:
    """Return ``x`` if it is a floating tensor with at least one dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor with >= 1 dimension, "
            f"got dtype {x.dtype} and shape {tuple(x.shape)}"
        )
    return x


def _check_affine(p: Tensor | None, name: str, dim: int) -> None:
    """Check that an optional affine parameter has shape ``(dim,)``."""
    if p is not None and tuple(p.shape) != (dim,):
        raise ValueError(f"{name} must have shape ({dim},) to match x's last dim, got "
                         f"{tuple(p.shape)}")


def layer_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalise the last dim of ``x`` to zero mean and unit (biased) variance, then scale/shift.

    Same numbers as ``torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)``.
    """
    x = _check_input(x)
    eps = _check_eps(eps)
    _check_affine(weight, "weight", x.shape[-1])
    _check_affine(bias, "bias", x.shape[-1])
    mean = x.mean(dim=-1, keepdim=True)
    centred = x - mean
    var = centred.square().mean(dim=-1, keepdim=True)  # biased: divide by d, not d - 1
    y = centred * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Divide the last dim of ``x`` by its root mean square, then scale by ``weight``.

    Same numbers as ``torch.nn.functional.rms_norm(x, x.shape[-1:], weight, eps)``.
    """
    x = _check_input(x)
    eps = _check_eps(eps)
    _check_affine(weight, "weight", x.shape[-1])
    y = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y
