"""The affine map ``x W + b`` over the last axis, shared by the attention and FFN modules."""

from __future__ import annotations

import torch

__all__ = ["affine"]


def affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w + b`` over the last axis of ``x`` (w: (in, out)); with a bias as one ``addmm``,
    so the bias costs no extra pass over the output."""
    if b is None:
        return x @ w
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[-1])
