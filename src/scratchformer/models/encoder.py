"""A small bidirectional transformer encoder that classifies whole sequences.

    tokens (B, L) -> token embedding (+ positions) -> n_layers blocks -> final norm
                  -> pool over positions (mean, or a prepended [CLS] slot) -> linear -> logits

With ``positional="none"`` and no causal mask this model is a function of the *multiset* of
input tokens only: every layer is permutation-equivariant and the pooling is invariant
(docs/derivations/positional-ablation.md). The positional ablation study relies on that.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scratchformer.nn.block import NORM_POSITIONS, BlockConfig, TransformerBlock
from scratchformer.nn.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEmbedding,
    TokenEmbedding,
)
from scratchformer.nn.norm import build_norm
from scratchformer.validation import check_int

__all__ = ["POOLINGS", "POSITIONALS", "EncoderClassifier"]

POSITIONALS = ("sinusoidal", "learned", "none")
POOLINGS = ("mean", "cls")


class EncoderClassifier(nn.Module):
    """Bidirectional encoder + pooling + linear head: ``(B, L)`` ids -> ``(B, num_classes)``.

    ``max_len`` bounds the number of input tokens (the [CLS] slot, if any, comes on top).
    With pre-LN blocks a final norm follows the last block; post-LN blocks already end in one.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        max_len: int,
        *,
        positional: str = "sinusoidal",
        pooling: str = "mean",
        d_hidden: int | None = None,
        activation: str = "gelu",
        dropout: float = 0.0,
        norm: str = "layer",
        norm_position: str = "pre",
    ) -> None:
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size)
        self.num_classes = check_int("num_classes", num_classes)
        self.d_model = check_int("d_model", d_model)
        n_layers = check_int("n_layers", n_layers)
        self.max_len = check_int("max_len", max_len)
        if positional not in POSITIONALS:
            raise ValueError(f"positional must be one of {POSITIONALS}, got {positional!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if norm_position not in NORM_POSITIONS:
            raise ValueError(
                f"norm_position must be one of {NORM_POSITIONS}, got {norm_position!r}"
            )
        self.positional = positional
        self.pooling = pooling

        self.tokens = TokenEmbedding(self.vocab_size, self.d_model)
        if pooling == "cls":
            # A learned vector in slot 0; the model reads the class off its final state.
            self.cls = nn.Parameter(torch.randn(self.d_model))
        else:
            self.register_parameter("cls", None)
        slots = self.max_len + (pooling == "cls")
        if positional == "sinusoidal":
            self.positions: nn.Module | None = SinusoidalPositionalEmbedding(slots, self.d_model)
        elif positional == "learned":
            self.positions = LearnedPositionalEmbedding(slots, self.d_model)
        else:
            self.positions = None
        self.drop = nn.Dropout(dropout)
        block = BlockConfig(self.d_model, n_heads, d_hidden, activation=activation,
                            dropout=dropout, norm=norm, norm_position=norm_position)
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(n_layers))
        self.norm = build_norm(norm, self.d_model) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(self.d_model, self.num_classes)

    def _check_tokens(self, tokens: Tensor, padding_mask: Tensor | None) -> None:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape (batch, length), got {tuple(tokens.shape)}")
        if not 1 <= tokens.shape[1] <= self.max_len:
            raise ValueError(
                f"sequence length must be in [1, max_len={self.max_len}], got {tokens.shape[1]}"
            )
        if padding_mask is not None:
            if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
                raise TypeError("padding_mask must be a boolean tensor (True = real token)")
            if padding_mask.shape != tokens.shape:
                raise ValueError(
                    f"padding_mask must have the tokens' shape {tuple(tokens.shape)}, "
                    f"got {tuple(padding_mask.shape)}"
                )
            if self.pooling == "mean" and not bool(padding_mask.any(dim=1).all()):
                raise ValueError("every sequence needs at least one real token to mean-pool")

    def encode(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Final hidden states ``(B, L', d_model)`` (``L' = L + 1`` with a [CLS] slot first).

        ``padding_mask`` (B, L), True for real tokens, keeps padded keys out of attention.
        """
        self._check_tokens(tokens, padding_mask)
        x = self.tokens(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
            if padding_mask is not None:
                padding_mask = nn.functional.pad(padding_mask, (1, 0), value=True)
        if self.positions is not None:
            x = self.positions(x)
        x = self.drop(x)
        attn_mask = None if padding_mask is None else padding_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)

    def pool(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``(B, L', d) -> (B, d)``: the [CLS] state, or the mean over real tokens."""
        if self.pooling == "cls":
            return hidden[:, 0]
        if padding_mask is None:
            return hidden.mean(dim=1)
        w = padding_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Class logits ``(B, num_classes)`` for token ids ``(B, L)``."""
        return self.head(self.pool(self.encode(tokens, padding_mask), padding_mask))
