"""Activation functions built from tensor operations: GELU (exact and tanh form) and ReLU.

GELU(x) = x·Φ(x), where Φ is the standard normal CDF: the expected value of x times a
Bernoulli(Φ(x)) mask (see docs/derivations/gelu.md). Each activation comes with its derivative
in closed form, so the gradient-flow analysis can read off where a unit's gradient is zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "ACTIVATIONS",
    "GELU_TANH_COEFF",
    "activation_derivative",
    "gelu",
    "gelu_derivative",
    "get_activation",
    "relu",
    "relu_derivative",
    "standard_normal_cdf",
    "standard_normal_pdf",
]

GELU_TANH_COEFF = 0.044715
"""The cubic coefficient a in the tanh approximation ½x(1 + tanh(√(2/π)(x + a·x³)))."""

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_APPROXIMATIONS = ("none", "tanh")
# Beyond |x| = 100 every GELU quantity equals its limit far below any float's resolution
# (Φ(-100) ≈ 1e-2174), so clamping there is exact in floating point and avoids ∞·0 = NaN.
_TAIL = 100.0


def _check_tensor(x: object, name: str = "x") -> torch.Tensor:
    """Fail early unless ``x`` is a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    return x


def _check_approximate(approximate: object) -> str:
    """Fail early unless ``approximate`` names a known GELU form."""
    if approximate not in _APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {_APPROXIMATIONS}, got {approximate!r}")
    return approximate  # type: ignore[return-value]


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) = P(Z ≤ x) for Z ~ N(0, 1), as ½·erfc(−x/√2).

    Written with erfc rather than ½(1 + erf(x/√2)) so that the left tail keeps its relative
    precision instead of cancelling to zero (e.g. Φ(−8) ≈ 6e-16 survives in float64).
    """
    _check_tensor(x)
    return 0.5 * torch.erfc(-x * _INV_SQRT_2)


def standard_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = exp(−x²/2)/√(2π), the standard normal density (Φ' = φ)."""
    _check_tensor(x)
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _tanh_arg(x: torch.Tensor) -> torch.Tensor:
    """u(x) = √(2/π)(x + a·x³), the argument of tanh in the approximation."""
    return _SQRT_2_OVER_PI * (x + GELU_TANH_COEFF * x * x * x)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU(x) = x·Φ(x) ("none") or its tanh approximation ½x(1 + tanh u(x)) ("tanh").

    The tanh form is evaluated as x·σ(2u), the same number (½(1 + tanh u) = σ(2u)) without the
    cancellation of 1 + tanh u ≈ 0 for negative x. NaN propagates; GELU(−∞) = 0, GELU(∞) = ∞.
    """
    _check_tensor(x)
    approximate = _check_approximate(approximate)
    x = x.clamp_min(-_TAIL)  # GELU(x) rounds to −0 for x < −40 anyway; this fixes −∞·0
    if approximate == "none":
        return x * standard_normal_cdf(x)
    return x * torch.sigmoid(2.0 * _tanh_arg(x))


def gelu_derivative(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """dGELU/dx in closed form: Φ(x) + x·φ(x), or for the tanh form s + 2x·s(1−s)·u'(x).

    Here s = σ(2u) and u'(x) = √(2/π)(1 + 3a·x²). Zero only at x ≈ −0.7518 (exact form);
    tends to 0 as x → −∞ and to 1 as x → ∞.
    """
    _check_tensor(x)
    approximate = _check_approximate(approximate)
    x = x.clamp(-_TAIL, _TAIL)  # the derivative equals its limit 0 / 1 out there; avoids ∞·0
    if approximate == "none":
        return standard_normal_cdf(x) + x * standard_normal_pdf(x)
    s = torch.sigmoid(2.0 * _tanh_arg(x))
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_COEFF * x * x)
    return s + 2.0 * x * s * (1.0 - s) * du


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU(x) = max(x, 0); NaN propagates."""
    _check_tensor(x)
    return x.clamp_min(0.0)


def relu_derivative(x: torch.Tensor) -> torch.Tensor:
    """dReLU/dx = 1 for x > 0 and 0 for x ≤ 0 (PyTorch's convention at 0); NaN propagates."""
    _check_tensor(x)
    step = (x > 0).to(x.dtype)
    return torch.where(torch.isnan(x), x, step)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (a named function so it pickles and prints well)."""
    return gelu(x, approximate="tanh")


def _gelu_tanh_derivative(x: torch.Tensor) -> torch.Tensor:
    """Derivative of the tanh-approximated GELU."""
    return gelu_derivative(x, approximate="tanh")


ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "gelu": (gelu, gelu_derivative),
    "gelu_tanh": (_gelu_tanh, _gelu_tanh_derivative),
    "relu": (relu, relu_derivative),
}
"""Activation name → (function, derivative); the names FeedForward accepts."""


def _check_name(name: object) -> str:
    """Fail early unless ``name`` is a key of ACTIVATIONS."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return name


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` ("gelu", "gelu_tanh" or "relu")."""
    return ACTIVATIONS[_check_name(name)][0]


def activation_derivative(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The closed-form derivative of the activation called ``name``."""
    return ACTIVATIONS[_check_name(name)][1]
