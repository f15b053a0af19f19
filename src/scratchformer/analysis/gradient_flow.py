"""Measuring how gradients flow through a deep network: per-layer norms and dead units.

Typical use, after ``loss.backward()``::

    norms = layer_grad_norms(blocks)            # ‖∂L/∂θ_l‖ for each block l
    dead = dead_unit_fraction(relu_derivative(z))  # units with zero gradient on every input

``OutputGradRecorder`` additionally keeps each layer's forward output and the gradient that
arrives at it (‖∂L/∂h_l‖), e.g. to compare the residual stream of Pre-LN and Post-LN stacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import TracebackType

import torch
from torch import nn

from scratchformer.functional.activations import standard_normal_pdf
from scratchformer.validation import check_int, check_real

__all__ = [
    "OutputGradRecorder",
    "dead_unit_fraction",
    "dead_unit_mask",
    "first_to_last_ratio",
    "layer_grad_norms",
    "mean_and_std",
    "mean_pairwise_cosine",
    "meanfield_second_moments",
    "relu_cosine_map",
    "relu_dead_probability",
    "zero_fraction",
]


def _check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def layer_grad_norms(layers: Sequence[nn.Module | torch.Tensor]) -> torch.Tensor:
    """‖∂L/∂θ_l‖₂ for each layer: all trainable parameters of a module, or one tensor's grad.

    Returns a float64 tensor of shape (len(layers),). A parameter without ``.grad`` raises a
    ValueError (call ``loss.backward()`` first) rather than silently counting as zero.
    """
    if isinstance(layers, (nn.Module, torch.Tensor)) or not isinstance(layers, Sequence):
        raise TypeError(
            f"layers must be a sequence of modules or tensors, got {type(layers).__name__}"
        )
    if len(layers) == 0:
        raise ValueError("layers must be a non-empty sequence, got an empty one")
    norms = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Module):
            params = [p for p in layer.parameters() if p.requires_grad]
        elif isinstance(layer, torch.Tensor):
            params = [layer]
        else:
            raise TypeError(f"layers[{i}] must be an nn.Module or a tensor, got {type(layer)}")
        if not params:
            raise ValueError(f"layers[{i}] has no trainable parameters")
        total = None
        for p in params:
            if p.grad is None:
                raise ValueError(
                    f"layers[{i}] has a parameter of shape {tuple(p.shape)} with no .grad; "
                    "call loss.backward() first"
                )
            sq = p.grad.detach().double().pow(2).sum()
            total = sq if total is None else total + sq
        norms.append(total.sqrt())
    return torch.stack(norms)


def zero_fraction(t: torch.Tensor) -> float:
    """The fraction of entries of ``t`` that are exactly zero."""
    _check_tensor(t, "t")
    if t.numel() == 0:
        raise ValueError("t must have at least one entry, got an empty tensor")
    return (t == 0).double().mean().item()


def dead_unit_mask(act_grad: torch.Tensor, unit_dim: int = -1) -> torch.Tensor:
    """Boolean mask over units: True where ``act_grad`` is exactly zero for every input.

    ``act_grad`` holds the activation derivative act'(z) (or any per-unit gradient) with the
    units along ``unit_dim`` and inputs (batch, positions, ...) along the other axes.
    """
    _check_tensor(act_grad, "act_grad")
    if act_grad.ndim == 0 or act_grad.numel() == 0:
        raise ValueError(
            f"act_grad must have a unit axis and entries, got shape {tuple(act_grad.shape)}"
        )
    zero = (act_grad == 0).movedim(unit_dim, -1)
    return zero.reshape(-1, zero.shape[-1]).all(dim=0)


def dead_unit_fraction(act_grad: torch.Tensor, unit_dim: int = -1) -> float:
    """The fraction of units whose gradient is exactly zero for every input (dead units)."""
    return dead_unit_mask(act_grad, unit_dim).double().mean().item()


def first_to_last_ratio(norms: torch.Tensor | Sequence[float]) -> float:
    """norms[0] / norms[-1]: ≫ 1 means gradients grow towards the input, ≪ 1 that they vanish."""
    t = torch.as_tensor(norms, dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"norms must be 1-D with at least two entries, got shape {tuple(t.shape)}")
    return (t[0] / t[-1]).item()


def mean_pairwise_cosine(h: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows of ``h`` (N, D): 1 means all rows align."""
    _check_tensor(h, "h")
    if h.ndim != 2 or h.shape[0] < 2:
        raise ValueError(f"h must have shape (N >= 2, D), got {tuple(h.shape)}")
    hn = h.double() / h.double().norm(dim=1, keepdim=True).clamp_min(1e-300)
    gram = hn @ hn.T
    n = h.shape[0]
    return ((gram.sum() - gram.diagonal().sum()) / (n * (n - 1))).item()


def meanfield_second_moments(
    act: Callable[[torch.Tensor], torch.Tensor],
    depth: int,
    q1: float = 2.0,
    gain2: float = 2.0,
    n_grid: int = 20_001,
) -> list[float]:
    """Mean square q_l of the pre-activations of a zero-bias stack, layer by layer, at ∞ width.

    With W ~ N(0, gain2/width): q_{l+1} = gain2 · E_{z~N(0,1)}[act(√q_l · z)²], starting at
    ``q1`` (2 for unit-variance inputs and He init). ReLU keeps q constant; GELU shrinks it.
    """
    depth = check_int("depth", depth)
    q1 = check_real("q1", q1, minimum=0, min_inclusive=False)
    gain2 = check_real("gain2", gain2, minimum=0, min_inclusive=False)
    z = torch.linspace(-12.0, 12.0, n_grid, dtype=torch.float64)
    weight = standard_normal_pdf(z)
    qs = [q1]
    for _ in range(depth - 1):
        second = torch.trapezoid(act(math.sqrt(qs[-1]) * z) ** 2 * weight, z).item()
        qs.append(gain2 * second)
    return qs


def relu_cosine_map(c: torch.Tensor) -> torch.Tensor:
    """κ(c) = (√(1−c²) + (π − arccos c)·c)/π: the cosine between relu(Wx) and relu(Wy).

    For Gaussian W with zero bias in the infinite-width limit, where c = cos(x, y). Iterating κ
    drives every cosine towards 1 (docs/derivations/gelu.md).
    """
    _check_tensor(c, "c")
    c = c.clamp(-1.0, 1.0)
    return (torch.sqrt(1.0 - c * c) + (math.pi - torch.acos(c)) * c) / math.pi


def relu_dead_probability(c: float, batch: int, n_grid: int = 20_001) -> float:
    """P(w·h_n ≤ 0 for all n) for w ~ N(0, I) and ``batch`` inputs with pairwise cosine ``c``.

    Equals ∫ φ(ξ) Φ(−ξ√(c/(1−c)))^batch dξ (equicorrelated Gaussian orthant probability): the
    chance that a zero-bias ReLU unit is dead on the whole batch. 2^−batch at c = 0, ½ at c = 1.
    """
    batch = check_int("batch", batch)
    c = check_real("c", c, minimum=0, maximum=1)  # a cosine
    if c == 1.0:
        return 0.5
    xi = torch.linspace(-12.0, 12.0, n_grid, dtype=torch.float64)
    a = math.sqrt(c / (1.0 - c))
    # log Φ(−aξ) via erfc keeps the tail exact; Φ^batch = exp(batch · log Φ).
    log_cdf = torch.log(0.5 * torch.erfc(a * xi / math.sqrt(2.0)))
    integrand = standard_normal_pdf(xi) * torch.exp(batch * log_cdf)
    return torch.trapezoid(integrand, xi).item()


def mean_and_std(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (Bessel-corrected, 0 for a single sample) standard deviation along ``dim``."""
    _check_tensor(values, "values")
    v = values.double()
    if v.ndim == 0:
        raise ValueError("values must have at least one axis, got a scalar")
    mean = v.mean(dim=dim)
    std = v.std(dim=dim) if v.shape[dim] > 1 else torch.zeros_like(mean)
    return mean, std


class OutputGradRecorder:
    """Context manager that records each module's forward output and, after backward, ∂L/∂output.

    Inside the ``with`` block run the forward pass and ``loss.backward()``; then ``outputs[i]``
    (detached) and ``grads[i]`` hold the latest values for ``modules[i]``. Hooks are removed on
    exit. Modules must return a single tensor.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        if isinstance(modules, nn.Module) or not isinstance(modules, Sequence) or not modules:
            raise TypeError(f"modules must be a non-empty sequence of modules, got {modules!r}")
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Module):
                raise TypeError(f"modules[{i}] must be an nn.Module, got {type(m).__name__}")
        self.modules = list(modules)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)
        self.grads: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list = []

    def _hook(self, index: int):
        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"modules[{index}] returned {type(output).__name__}, not a tensor")
            self.outputs[index] = output.detach()
            if output.requires_grad:
                output.register_hook(lambda g: self.grads.__setitem__(index, g.detach()))

        return forward_hook

    def __enter__(self) -> OutputGradRecorder:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def grad_norms(self) -> torch.Tensor:
        """‖∂L/∂h_l‖₂ for each recorded module output, as a float64 tensor."""
        missing = [i for i, g in enumerate(self.grads) if g is None]
        if missing:
            raise ValueError(f"no gradient recorded for modules {missing}; run backward inside")
        return torch.stack([g.double().norm() for g in self.grads])  # type: ignore[union-attr]
