"""Multi-head attention: project, split into heads, attend, merge, project back."""

from __future__ import annotations

import math

import torch
from torch import nn

from scratchformer.functional.attention import attention_weights, scaled_dot_product_attention

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention with ``n_heads`` heads of size ``d_model // n_heads``.

    Projections are plain matrices applied as ``x @ w`` (shape ``(d_model, d_model)``), so the
    weights read the way the equations are written: ``Q = x W_q + b_q``. Weights and biases are
    initialised like ``nn.Linear``: uniform in ±1/sqrt(d_model) (fan-in = d_model).
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model} and "
                f"n_heads={n_heads} (remainder {d_model % n_heads})"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = float(dropout)
        for name in ("q", "k", "v", "o"):
            self.register_parameter(f"w_{name}", nn.Parameter(torch.empty(d_model, d_model)))
            b = nn.Parameter(torch.empty(d_model)) if bias else None
            self.register_parameter(f"b_{name}", b)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every weight and bias from U(-1/sqrt(d_model), 1/sqrt(d_model)), as nn.Linear."""
        bound = 1.0 / math.sqrt(self.d_model)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _project(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """``x @ w + b`` split into heads: (B, T, d_model) -> (B, H, T, head_dim)."""
        y = x @ w
        if b is not None:
            y = y + b
        B, T, _ = y.shape
        return y.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` (B, L, d_model) to ``context`` (B, S, d_model; default ``x``).

        ``attn_mask`` (boolean, True = take part, or additive float) broadcasts to (B, H, L, S),
        e.g. (L, S) or a key-padding mask (B, 1, 1, S). Returns (B, L, d_model), and with
        ``need_weights`` also the pre-dropout weights (B, H, L, S), computed with plain autograd.
        """
        self._check_input("x", x)
        context = x if context is None else context
        self._check_input("context", context)
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"context batch size {context.shape[0]} does not match x batch size {x.shape[0]}"
            )
        q = self._project(x, self.w_q, self.b_q)
        k = self._project(context, self.w_k, self.b_k)
        v = self._project(context, self.w_v, self.b_v)
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            weights = attention_weights(q, k, attn_mask=attn_mask, is_causal=is_causal)
            dropped = nn.functional.dropout(weights, p=dropout_p, training=self.training)
            heads = dropped @ v
        else:
            heads = scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
            )
        B, _, L, _ = heads.shape
        merged = heads.transpose(1, 2).reshape(B, L, self.d_model)
        out = merged @ self.w_o
        if self.b_o is not None:
            out = out + self.b_o
        return (out, weights) if need_weights else out

    def _check_input(self, name: str, t: torch.Tensor) -> None:
        """Raise unless ``t`` is a (B, T, d_model) tensor."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 3 or t.shape[-1] != self.d_model:
            raise ValueError(
                f"{name} must have shape (batch, length, d_model={self.d_model}), "
                f"got {tuple(t.shape)}"
            )

    def extra_repr(self) -> str:
        """Sizes shown by ``print(module)``."""
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"bias={self.b_q is not None}, dropout={self.dropout}"
        )
