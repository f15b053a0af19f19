"""The transformer block: self-attention and a feed-forward network, each in a residual branch.

Two placements of the normalisation are in use (Xiong et al., 2020, "On Layer Normalization in
the Transformer Architecture"):

    pre-LN  (GPT-2, LLaMA):          x = x + Attn(N1(x));      x = x + FFN(N2(x))
    post-LN (Vaswani et al., 2017):  x = N1(x + Attn(x));      x = N2(x + FFN(x))

Pre-LN keeps an identity path from input to output (the residual stream is never normalised),
which is why deep pre-LN stacks train without warm-up; it then needs one final norm after the
last block. Post-LN normalises the stream itself after every sub-layer. ``N`` is LayerNorm or
RMSNorm. ``causal=True`` lets position ``i`` attend only to positions ``<= i`` (decoders);
a causal block can then decode with a `LayerKVCache` (``scratchformer.nn.kv_cache``).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from scratchformer.functional.masks import causal_mask
from scratchformer.functional.sparse import SparsePattern
from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.kv_cache import LayerKVCache, decode_causal_mask
from scratchformer.nn.norm import NORMS, LayerNorm, RMSNorm, build_norm

__all__ = ["NORM_POSITIONS", "TransformerBlock", "make_norm"]

NORM_POSITIONS = ("pre", "post")


def make_norm(kind: str, dim: int, eps: float | None = None, bias: bool = True) -> nn.Module:
    """``build_norm(kind, dim)``, or the same norm with a given ``eps`` / without a shift."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
    if not isinstance(bias, bool):
        raise TypeError(f"norm_bias must be a bool, got {type(bias).__name__} {bias!r}")
    if eps is None and bias:
        return build_norm(kind, dim)
    if kind == "layer":
        return LayerNorm(dim, eps=1e-5 if eps is None else eps, bias=bias)
    return RMSNorm(dim) if eps is None else RMSNorm(dim, eps=eps)  # RMSNorm has no shift


class TransformerBlock(nn.Module):
    """One transformer layer ``(B, L, d_model) -> (B, L, d_model)``: attention then FFN.

    ``norm`` picks LayerNorm (``"layer"``) or RMSNorm (``"rms"``), ``norm_position`` pre-LN or
    post-LN (see the module docstring). ``dropout`` is applied, as in
    ``torch.nn.TransformerEncoderLayer``, to the attention weights, the FFN's hidden
    activations, and each sub-layer's output before it joins the residual stream.
    ``attention_backend`` picks the attention kernel ("scratch", "sdpa" or "block_sparse", the
    last attending within ``sparse_pattern``, a `SparsePattern`); ``norm_eps``
    overrides the norm's default epsilon and ``norm_bias=False`` drops LayerNorm's shift.
    ``ffn_module`` replaces the FeedForward with any (..., d_model) -> (..., d_model) module,
    e.g. a `MoEFeedForward` (``scratchformer.nn.moe``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_hidden: int | None = None,
        *,
        activation: str = "gelu",
        dropout: float = 0.0,
        norm: str = "layer",
        norm_position: str = "pre",
        causal: bool = False,
        bias: bool = True,
        attention_backend: str = "scratch",
        sparse_pattern: SparsePattern | None = None,
        norm_eps: float | None = None,
        norm_bias: bool = True,
        ffn_module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if norm_position not in NORM_POSITIONS:
            raise ValueError(
                f"norm_position must be one of {NORM_POSITIONS}, got {norm_position!r}"
            )
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {type(causal).__name__} {causal!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model = d_model
        self.norm_position = norm_position
        self.causal = causal
        self.attn = MultiHeadAttention(
            d_model, n_heads, bias=bias, dropout=dropout, backend=attention_backend,
            sparse=sparse_pattern,
        )
        if ffn_module is not None and not isinstance(ffn_module, nn.Module):
            raise TypeError(f"ffn_module must be an nn.Module, got {type(ffn_module).__name__}")
        self.ffn = ffn_module if ffn_module is not None else FeedForward(
            d_model, d_hidden, activation=activation, dropout=dropout, bias=bias)
        self.norm1 = make_norm(norm, d_model, norm_eps, norm_bias)
        self.norm2 = make_norm(norm, d_model, norm_eps, norm_bias)
        self.drop = nn.Dropout(dropout)

    def _mask(self, x: Tensor, attn_mask: Tensor | None, past: int) -> Tensor | None:
        """The caller's mask, intersected with the causal one when ``causal`` is set.

        ``past`` positions already sit in a KV cache; the causal triangle then covers
        (L, past + L), aligned bottom-right.
        """
        if not self.causal or attn_mask is None:
            return attn_mask
        L = x.shape[1]
        allowed = causal_mask(L, L, x.device) if past == 0 else decode_causal_mask(
            L, past + L, x.device
        )
        if attn_mask.dtype == torch.bool:
            return attn_mask & allowed
        return torch.where(allowed, attn_mask, float("-inf"))  # broadcasts both ways

    def _attend(
        self,
        h: Tensor,
        attn_mask: Tensor | None,
        kv_cache: LayerKVCache | None,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        mask = self._mask(h, attn_mask, 0 if kv_cache is None else kv_cache.length)
        is_causal = self.causal and mask is None  # a given mask already holds the triangle
        out = self.attn(
            h, attn_mask=mask, is_causal=is_causal, need_weights=need_weights, kv_cache=kv_cache
        )
        out, weights = out if need_weights else (out, None)
        return self.drop(out), weights

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        *,
        kv_cache: LayerKVCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Apply the block to ``x`` (B, L, d_model).

        ``attn_mask`` (boolean, True = may attend, or additive float) broadcasts to
        (B, n_heads, L, L), e.g. a key-padding mask of shape (B, 1, 1, L); with ``causal`` it
        is combined with the causal mask. ``kv_cache`` (causal blocks only) holds the earlier
        positions' keys and values, and ``attn_mask`` then covers (L, cached + L).
        ``need_weights`` also returns the attention weights (B, n_heads, L, S).
        """
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, length, {self.d_model}), got {shape}")
        if kv_cache is not None and not self.causal:
            raise ValueError("kv_cache needs a causal block (causal=True)")
        if self.norm_position == "pre":
            a, weights = self._attend(self.norm1(x), attn_mask, kv_cache, need_weights)
            x = x + a
            x = x + self.drop(self.ffn(self.norm2(x)))
        else:
            a, weights = self._attend(x, attn_mask, kv_cache, need_weights)
            x = self.norm1(x + a)
            x = self.norm2(x + self.drop(self.ffn(x)))
        return (x, weights) if need_weights else x

    def extra_repr(self) -> str:
        return f"norm_position={self.norm_position!r}, causal={self.causal}"
