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

A block is built from a `BlockConfig`, handed whole (a model's config builds it once and every
layer reads what it needs); ``TransformerBlock.build(d_model, n_heads, ...)`` is the
keyword form for standalone use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from scratchformer.functional.activations import ACTIVATIONS
from scratchformer.functional.masks import causal_mask
from scratchformer.functional.sparse import SparsePattern
from scratchformer.nn.attention import MultiHeadAttention, check_backend
from scratchformer.nn.feedforward import FeedForward
from scratchformer.nn.kv_cache import LayerKVCache, decode_causal_mask
from scratchformer.nn.moe import MoEConfig, MoEFeedForward
from scratchformer.nn.norm import NORMS, LayerNorm, RMSNorm, build_norm
from scratchformer.validation import (
    check_bool,
    check_choice,
    check_int,
    check_optional_int,
    check_probability,
    check_real,
)

__all__ = ["NORM_POSITIONS", "BlockConfig", "TransformerBlock", "make_norm"]

NORM_POSITIONS = ("pre", "post")


@dataclass(frozen=True)
class BlockConfig:
    """Everything a `TransformerBlock` is made of, checked when built.

    ``d_hidden`` defaults to 4·d_model; ``attention_backend`` names a registered attention
    kernel (``sparse`` is the `SparsePattern` of "block_sparse"); ``norm_eps`` None keeps the
    norm's default and ``norm_bias=False`` drops LayerNorm's shift; ``moe`` replaces the FFN by a
    `MoEFeedForward` with those options.
    """

    d_model: int
    n_heads: int
    d_hidden: int | None = None
    activation: str = "gelu"
    dropout: float = 0.0
    norm: str = "layer"
    norm_position: str = "pre"
    causal: bool = False
    bias: bool = True
    attention_backend: str = "scratch"
    sparse: SparsePattern | None = None
    norm_eps: float | None = None
    norm_bias: bool = True
    moe: MoEConfig | None = None

    def __post_init__(self) -> None:
        check_int("d_model", self.d_model)
        check_int("n_heads", self.n_heads)
        check_optional_int("d_hidden", self.d_hidden)
        check_choice("activation", self.activation, sorted(ACTIVATIONS))
        check_probability("dropout", self.dropout)
        check_choice("norm", self.norm, NORMS)
        check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        check_bool("causal", self.causal)
        check_bool("bias", self.bias)
        check_backend(self.attention_backend, "attention_backend")
        if self.sparse is not None and not isinstance(self.sparse, SparsePattern):
            raise TypeError(f"sparse must be a SparsePattern or None, got "
                            f"{type(self.sparse).__name__}")
        if self.norm_eps is not None:
            check_real("norm_eps", self.norm_eps, minimum=0.0)
        check_bool("norm_bias", self.norm_bias)
        if self.moe is not None and not isinstance(self.moe, MoEConfig):
            raise TypeError(f"moe must be a MoEConfig or None, got {type(self.moe).__name__}")

    @property
    def hidden_size(self) -> int:
        """The FFN width: ``d_hidden``, or 4·d_model when that is None."""
        return 4 * self.d_model if self.d_hidden is None else self.d_hidden


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

    Built from a `BlockConfig`: ``norm`` picks LayerNorm (``"layer"``) or RMSNorm (``"rms"``),
    ``norm_position`` pre-LN or post-LN (see the module docstring). ``dropout`` is applied, as in
    ``torch.nn.TransformerEncoderLayer``, to the attention weights, the FFN's hidden
    activations, and each sub-layer's output before it joins the residual stream.
    """

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        if not isinstance(config, BlockConfig):
            raise TypeError(f"config must be a BlockConfig, got {type(config).__name__}; "
                            "use TransformerBlock.build(d_model, n_heads, ...) for keywords")
        c = self.config = config
        self.d_model = c.d_model
        self.norm_position = c.norm_position
        self.causal = c.causal
        self.attn = MultiHeadAttention(c.d_model, c.n_heads, bias=c.bias, dropout=c.dropout,
                                       backend=c.attention_backend, sparse=c.sparse)
        self.ffn: nn.Module = (
            FeedForward(c.d_model, c.d_hidden, activation=c.activation, dropout=c.dropout,
                        bias=c.bias)
            if c.moe is None else
            MoEFeedForward.from_config(c.moe, c.d_model, c.hidden_size,
                                       activation=c.activation, dropout=c.dropout, bias=c.bias))
        self.norm1 = make_norm(c.norm, c.d_model, c.norm_eps, c.norm_bias)
        self.norm2 = make_norm(c.norm, c.d_model, c.norm_eps, c.norm_bias)
        self.drop = nn.Dropout(c.dropout)

    @classmethod
    def build(cls, d_model: int, n_heads: int, d_hidden: int | None = None,
              **options: Any) -> TransformerBlock:
        """A block from keywords: ``BlockConfig(d_model, n_heads, d_hidden, **options)``."""
        return cls(BlockConfig(d_model, n_heads, d_hidden, **options))

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

    def _drop(self, x: Tensor) -> Tensor:
        """Residual dropout; skipped outright when it is the identity (eval mode or p = 0)."""
        return self.drop(x) if self.training and self.drop.p > 0 else x

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
        return self._drop(out), weights

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
            x = x + self._drop(self.ffn(self.norm2(x)))
        else:
            a, weights = self._attend(x, attn_mask, kv_cache, need_weights)
            x = self.norm1(x + a)
            x = self.norm2(x + self._drop(self.ffn(x)))
        return (x, weights) if need_weights else x

    def extra_repr(self) -> str:
        return f"norm_position={self.norm_position!r}, causal={self.causal}"
