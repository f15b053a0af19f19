"""Linformer self-attention: multi-head attention over k learned projections of n positions.

Keys and values of every head are mixed along the sequence axis by learned E, F (k×n) before
the softmax, so the weights are L×k instead of L×n (docs/derivations/low-rank-attention.md).
The length n is fixed at construction; E and F are shared by the heads (Wang et al.'s
"headwise sharing"). Not causal: every projected key mixes all positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scratchformer.functional.lowrank import linformer_attention
from scratchformer.validation import check_bool, check_int

__all__ = ["LinformerAttention"]


class LinformerAttention(nn.Module):
    """Self-attention on (B, seq_len, d_model) with keys/values projected to ``k`` positions.

    Weights ``w_q, w_k, w_v, w_o`` (d_model×d_model, applied as ``x @ w``) read like those of
    `MultiHeadAttention`; ``E`` and ``F`` are (k, seq_len), drawn from N(0, 1/seq_len) so that a
    projected key has the scale of one key (a random projection in the Johnson–Lindenstrauss
    sense).
    """

    def __init__(self, d_model: int, n_heads: int, seq_len: int, k: int, *,
                 bias: bool = True) -> None:
        super().__init__()
        d_model, n_heads = check_int("d_model", d_model), check_int("n_heads", n_heads)
        seq_len, k = check_int("seq_len", seq_len), check_int("k", k)
        bias = check_bool("bias", bias)
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got d_model={d_model} and "
                             f"n_heads={n_heads}")
        if k > seq_len:
            raise ValueError(f"k must be <= seq_len={seq_len} (a projection, not a lift), "
                             f"got {k}")
        self.d_model, self.n_heads, self.seq_len, self.k = d_model, n_heads, seq_len, k
        self.head_dim = d_model // n_heads
        for name in ("q", "k", "v", "o"):
            self.register_parameter(f"w_{name}", nn.Parameter(torch.empty(d_model, d_model)))
            self.register_parameter(f"b_{name}",
                                    nn.Parameter(torch.empty(d_model)) if bias else None)
        self.E = nn.Parameter(torch.empty(k, seq_len))
        self.F = nn.Parameter(torch.empty(k, seq_len))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Projections and biases as nn.Linear (U(±1/√d_model)); E, F ~ N(0, 1/seq_len)."""
        bound = 1.0 / math.sqrt(self.d_model)
        for name in ("q", "k", "v", "o"):
            nn.init.uniform_(getattr(self, f"w_{name}"), -bound, bound)
            b = getattr(self, f"b_{name}")
            if b is not None:
                nn.init.uniform_(b, -bound, bound)
        nn.init.normal_(self.E, std=1.0 / math.sqrt(self.seq_len))
        nn.init.normal_(self.F, std=1.0 / math.sqrt(self.seq_len))

    def _heads(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``x W + b`` split into heads: (B, n, d_model) -> (B, H, n, head_dim)."""
        y = x @ getattr(self, f"w_{name}")
        b = getattr(self, f"b_{name}")
        if b is not None:
            y = y + b
        B, n, _ = y.shape
        return y.view(B, n, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, need_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend within ``x`` (B, seq_len, d_model) -> (B, seq_len, d_model).

        ``need_weights`` also returns the (B, H, seq_len, seq_len) matrix ``P̄ F`` that the heads
        apply to the values.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 3 or x.shape[1] != self.seq_len or x.shape[2] != self.d_model:
            raise ValueError(f"x must have shape (batch, seq_len={self.seq_len}, "
                             f"d_model={self.d_model}), got {tuple(x.shape)}")
        q, k, v = self._heads(x, "q"), self._heads(x, "k"), self._heads(x, "v")
        res = linformer_attention(q, k, v, self.E, self.F, return_matrix=need_weights)
        heads, weights = res if need_weights else (res, None)
        B = x.shape[0]
        out = heads.transpose(1, 2).reshape(B, self.seq_len, self.d_model) @ self.w_o
        if self.b_o is not None:
            out = out + self.b_o
        return (out, weights) if need_weights else out

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, seq_len={self.seq_len}, "
                f"k={self.k}, bias={self.b_q is not None}")
