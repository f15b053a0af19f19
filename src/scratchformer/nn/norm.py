"""LayerNorm and RMSNorm modules over the last dimension, and a factory that picks one by name.

The arithmetic lives in :mod:`scratchformer.functional.normalization`; these modules only own
the learnable gain (``weight``) and shift (``bias``). Parameter names match ``torch.nn`` so a
state dict from ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm`` loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.functional.normalization import layer_norm, layer_norm_inference, rms_norm
from scratchformer.validation import check_choice, check_int, check_real

__all__ = ["KERNELS", "NORMS", "LayerNorm", "RMSNorm", "build_norm", "check_kernels"]

KERNELS = ("scratch", "torch")
"""Which arithmetic the element-wise layers run: ours (tensor ops with derived backwards) or
PyTorch's fused built-ins (``F.layer_norm``, ``F.gelu``): the same functions, kept for speed
comparisons with models that use the built-ins."""


def check_kernels(kernels: object) -> str:
    """Fail early unless ``kernels`` is one of `KERNELS`."""
    return check_choice("kernels", kernels, KERNELS)


def _check_last_dim(x: Tensor, dim: int, who: str) -> None:
    """Fail early when the input's feature size does not match the module's."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"{who}(dim={dim}) expects x.shape[-1] == {dim}, got {tuple(x.shape)}")


class LayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dim (Ba et al., 2016)."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.eps = check_real("eps", eps, minimum=0)
        self.elementwise_affine = bool(elementwise_affine)
        self.kernels = "scratch"  # or "torch": F.layer_norm (see KERNELS)
        if self.elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.dim))
            self.bias = nn.Parameter(torch.zeros(self.dim)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """Gain 1 and shift 0: the layer starts as pure standardisation."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every feature vector (last dim) of ``x`` independently."""
        _check_last_dim(x, self.dim, "LayerNorm")
        if self.kernels == "torch":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        if not torch.is_grad_enabled() and x.is_floating_point():  # parameters checked at init
            return layer_norm_inference(x, self.weight, self.bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.dim}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last dim (Zhang & Sennrich, 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.eps = check_real("eps", eps, minimum=0)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.dim))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        """Gain 1: the layer starts as pure RMS scaling."""
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Rescale every feature vector (last dim) of ``x`` to unit root mean square."""
        _check_last_dim(x, self.dim, "RMSNorm")
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


NORMS = ("layer", "rms")


def build_norm(kind: str, dim: int) -> nn.Module:
    """A fresh ``LayerNorm`` (``kind="layer"``) or ``RMSNorm`` (``kind="rms"``) of size ``dim``."""
    kind = check_choice("norm", kind, NORMS)
    return LayerNorm(dim) if kind == "layer" else RMSNorm(dim)
