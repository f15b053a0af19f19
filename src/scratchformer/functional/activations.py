"""Activation functions built from tensor operations: GELU (exact and tanh form) and ReLU.

GELU(x) = x·Φ(x), where Φ is the standard normal CDF: the expected value of x times a
Bernoulli(Φ(x)) mask (see docs/derivations/gelu.md). Each activation comes with its derivative
in closed form, so the gradient-flow analysis can read off where a unit's gradient is zero.

`gelu` runs through `GeluFunction`, whose backward pass *is* that closed form: it saves the
input and the gate (Φ(x), or σ(2u) for the tanh form) and multiplies the incoming gradient by
Φ + xφ (resp. s + 2x·s(1−s)·u'), instead of letting autograd replay every operation of the
forward formula (docs/derivations/gelu.md, §5; timings in docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from scratchformer.validation import check_choice

__all__ = [
    "ACTIVATIONS",
    "GELU_TANH_COEFF",
    "GeluFunction",
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
_LOG2_E = 1.0 / math.log(2.0)
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
    approximate = check_choice("approximate", approximate, _APPROXIMATIONS)
    if not (x.requires_grad and torch.is_grad_enabled()):  # inference: the forward alone
        return _gelu_forward(x, approximate)[0]
    return GeluFunction.apply(x, approximate)


def _scalar(like: torch.Tensor, value: float) -> torch.Tensor:
    """A 0-d tensor on ``like``'s device and dtype: lets ``addcmul`` add a constant in its pass."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _gelu_forward(x: torch.Tensor, approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU(x) and its gate g(x) (GELU = x·g), without autograd: the forward of `GeluFunction`."""
    # GELU(x) rounds to −0 for x < −40 anyway; clamping at −100 fixes GELU(−∞) = −∞·0.
    y = x.clamp_min(-_TAIL)
    if approximate == "none":
        gate = torch.mul(y, -_INV_SQRT_2).erfc_().mul_(0.5)  # Φ(x) = ½·erfc(−x/√2)
    else:
        # 2u = x·(2c + 2ca·x²) with c = √(2/π): the bracket in one addcmul pass.
        c2 = 2.0 * _SQRT_2_OVER_PI
        gate = torch.addcmul(_scalar(y, c2), y, y, value=c2 * GELU_TANH_COEFF)
        gate.mul_(y).sigmoid_()  # s = σ(2u) = ½(1 + tanh u)
    return y.mul_(gate), gate


class GeluFunction(torch.autograd.Function):
    """GELU (``approximate`` "none" or "tanh") with the closed-form derivative as its backward.

    Saves the input and the gate g(x) with GELU(x) = x·g(x): Φ(x) for the exact form,
    s = σ(2u(x)) for the tanh form. The backward pass then needs one exponential (exact form:
    φ = e^(−x²/2)/√(2π), computed with ``exp2``) or nothing transcendental (tanh form). Each
    direction allocates two tensors and writes the rest in place. Not twice differentiable (it
    raises); differentiate `gelu_derivative` for GELU''.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, approximate: str) -> torch.Tensor:
        y, gate = _gelu_forward(x, approximate)
        ctx.save_for_backward(x, gate)
        ctx.approximate = approximate
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        x, gate = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        # Beyond ±100, x·φ(x) and x·s(1−s) are exactly 0 in floating point; clamping avoids ∞·0.
        x = x.clamp(-_TAIL, _TAIL)
        if ctx.approximate == "none":
            # GELU' = Φ + x·φ with φ(x) = e^(−x²/2)/√(2π), as 2^(−x²·log₂e/2): the same number,
            # and PyTorch's CPU exp2 kernel is 2.5-3× faster than its exp (docs/benchmarks.md).
            slope = torch.addcmul(_scalar(x, 0.0), x, x, value=-0.5 * _LOG2_E).exp2_()
            torch.addcmul(gate, x, slope, value=_INV_SQRT_2PI, out=slope)
        else:
            # GELU_tanh' = s + x·s(1−s)·2u'(x), with 2u' = 2c(1 + 3a·x²).
            c2 = 2.0 * _SQRT_2_OVER_PI
            slope = torch.addcmul(_scalar(x, c2), x, x, value=3.0 * c2 * GELU_TANH_COEFF)
            slope.mul_(x)
            s_one_minus_s = torch.addcmul(gate, gate, gate, value=-1.0, out=x)  # reuses x
            slope.mul_(s_one_minus_s).add_(gate)
        return slope.mul_(grad_y), None


def gelu_derivative(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """dGELU/dx in closed form: Φ(x) + x·φ(x), or for the tanh form s + 2x·s(1−s)·u'(x).

    Here s = σ(2u) and u'(x) = √(2/π)(1 + 3a·x²). Zero only at x ≈ −0.7518 (exact form);
    tends to 0 as x → −∞ and to 1 as x → ∞.
    """
    _check_tensor(x)
    approximate = check_choice("approximate", approximate, _APPROXIMATIONS)
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


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` ("gelu", "gelu_tanh" or "relu")."""
    return ACTIVATIONS[check_choice("activation", name, sorted(ACTIVATIONS))][0]


def activation_derivative(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The closed-form derivative of the activation called ``name``."""
    return ACTIVATIONS[check_choice("activation", name, sorted(ACTIVATIONS))][1]
