r"""A cross-sentence attention classifier for sentence pairs (decomposable attention / ESIM style).

    premise a (B, Lp), hypothesis b (B, Lh)
      -> shared bidirectional encoder (word + position + exact-match embedding, n_layers blocks)
      -> soft alignment  e = a bᵀ / √d;  ã = softmax_j(e) b,  b̃ = softmax_i(eᵀ) a
      -> compare  m_a = G([a; ã; a − ã; a ⊙ ã]),  m_b likewise  (G: a small FFN)
      -> optional composition blocks over m_a, m_b (shared)
      -> aggregate  v_a = [mean(m_a); max(m_a)],  v_b likewise (real tokens only)
      -> MLP([v_a; v_b]) -> logits (B, num_classes)

Why this shape for small NLI data: the label mostly depends on how each hypothesis word relates
to the premise word it lines up with, so the model aligns words first and classifies the
aligned comparisons, instead of hoping one sequence encoder discovers the alignment from 28k
examples. Parikh et al. (2016), "A Decomposable Attention Model for NLI"; Chen et al. (2017),
"Enhanced LSTM for Natural Language Inference".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.models.word_pair import (
    WordPairConfig,
    WordPairEmbedding,
    WordPairModel,
    check_pair_ids,
    encoder_blocks,
    masked_mean_max,
    match_flags,
)
from scratchformer.nn.norm import build_norm
from scratchformer.validation import check_int

__all__ = ["CrossAttentionConfig", "CrossAttentionNLI"]


@dataclass(frozen=True)
class CrossAttentionConfig(WordPairConfig):
    """`WordPairConfig` plus ``compose_layers`` blocks run over the comparison vectors."""

    compose_layers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("compose_layers", self.compose_layers, 0, 24)


class CrossAttentionNLI(WordPairModel):
    """Encode both sentences, align them by attention, compare, pool, classify."""

    def __init__(self, config: CrossAttentionConfig) -> None:
        super().__init__()
        if not isinstance(config, CrossAttentionConfig):
            raise TypeError(f"config must be a CrossAttentionConfig, got {type(config).__name__}")
        self.config = c = config
        d = c.d_model
        self.embed = WordPairEmbedding(c, c.max_len)
        self.encoder = encoder_blocks(c, c.n_layers)
        self.norm = build_norm("layer", d)
        self.compare = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Dropout(c.dropout))
        self.compose = encoder_blocks(c, c.compose_layers)
        self.compose_norm = build_norm("layer", d) if c.compose_layers else nn.Identity()
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(4 * d, d), nn.GELU(),
                                  nn.Dropout(c.dropout), nn.Linear(d, c.num_classes))

    def _unread_rows(self) -> int:
        """All word rows but the token's own."""
        return self.config.vocab_size - 1

    def _run(self, blocks: nn.ModuleList, a: Tensor, b: Tensor, a_mask: Tensor,
             b_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Apply ``blocks`` (same weights) to each sentence under its key-padding mask."""
        for block in blocks:
            a = block(a, attn_mask=a_mask[:, None, None, :])
            b = block(b, attn_mask=b_mask[:, None, None, :])
        return a, b

    def align(self, a: Tensor, b: Tensor, a_mask: Tensor, b_mask: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
        """ã (B, Lp, d), b̃ (B, Lh, d) and the scores e (B, Lp, Lh) of the soft alignment."""
        e = a @ b.transpose(1, 2) / math.sqrt(a.shape[-1])
        a_tilde = torch.softmax(e.masked_fill(~b_mask[:, None, :], float("-inf")), -1) @ b
        b_tilde = torch.softmax(e.transpose(1, 2).masked_fill(~a_mask[:, None, :],
                                                              float("-inf")), -1) @ a
        return a_tilde, b_tilde, e

    def encode(self, premise: Tensor, hypothesis: Tensor) -> tuple[Tensor, Tensor]:
        """Contextual states (B, Lp, d), (B, Lh, d) of each sentence, before the alignment."""
        check_pair_ids(premise, hypothesis, self.config.max_len)
        a_mask, b_mask = premise != 0, hypothesis != 0
        a = self.embed(premise, match_flags(premise, hypothesis))
        b = self.embed(hypothesis, match_flags(hypothesis, premise))
        a, b = self._run(self.encoder, a, b, a_mask, b_mask)
        return self.norm(a), self.norm(b)

    def alignment(self, premise: Tensor, hypothesis: Tensor) -> tuple[Tensor, Tensor]:
        """The soft-alignment weights: (B, Lp, Lh), how each premise word spreads over the
        hypothesis (rows sum to 1 over its real words), and (B, Lh, Lp) the other way."""
        a, b = self.encode(premise, hypothesis)
        _, _, e = self.align(a, b, premise != 0, hypothesis != 0)
        p2h = torch.softmax(e.masked_fill((hypothesis == 0)[:, None, :], float("-inf")), -1)
        h2p = torch.softmax(e.transpose(1, 2).masked_fill((premise == 0)[:, None, :],
                                                          float("-inf")), -1)
        return p2h, h2p

    def forward(self, premise: Tensor, hypothesis: Tensor) -> Tensor:
        """Class logits (B, num_classes) of right-padded premise/hypothesis ids (0 = pad)."""
        a, b = self.encode(premise, hypothesis)
        a_mask, b_mask = premise != 0, hypothesis != 0
        a_tilde, b_tilde, _ = self.align(a, b, a_mask, b_mask)
        m_a = self.compare(torch.cat([a, a_tilde, a - a_tilde, a * a_tilde], -1))
        m_b = self.compare(torch.cat([b, b_tilde, b - b_tilde, b * b_tilde], -1))
        if self.config.compose_layers:
            m_a, m_b = self._run(self.compose, m_a, m_b, a_mask, b_mask)
            m_a, m_b = self.compose_norm(m_a), self.compose_norm(m_b)
        v = torch.cat([masked_mean_max(m_a, a_mask), masked_mean_max(m_b, b_mask)], -1)
        return self.head(v)
