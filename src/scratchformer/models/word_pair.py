"""Shared parts of the word-level sentence-pair classifiers: config, embedding, masks, pooling.

Both `CrossAttentionNLI` and `PairEncoderNLI` read a batch as two right-padded id tensors,
premise (B, Lp) and hypothesis (B, Lh), with id 0 as padding (`scratchformer.data.nli_pairs`).
Each token's embedding is the sum of its word row, its position and, with ``match_feature``,
a learned "this word also occurs in the other sentence" vector: an exact-match flag computed
from the ids themselves, which a model trained from scratch on a small set learns only slowly.

`WordPairConfig` is checked with bounds when built, so a config read from disk with a missing
key or an absurd size fails with one message before any tensor is allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from scratchformer.nn.block import BlockConfig, TransformerBlock
from scratchformer.nn.embeddings import LearnedPositionalEmbedding, TokenEmbedding
from scratchformer.nn.moe import MoEConfig, MoEFeedForward
from scratchformer.validation import check_bool, check_choice, check_int, check_probability

__all__ = [
    "FFNS",
    "WordPairConfig",
    "WordPairEmbedding",
    "WordPairModel",
    "check_pair_ids",
    "encoder_blocks",
    "masked_mean_max",
    "match_flags",
]

FFNS = ("dense", "moe")
MAX_EMBEDDING_PARAMETERS = 50_000_000  # vocab_size * d_model above this is refused


@dataclass(frozen=True)
class WordPairConfig:
    """Sizes of a word-level pair classifier, each checked against bounds when built.

    ``max_len`` is the most words per sentence; ``ffn="moe"`` replaces each encoder FFN (of width
    ``d_hidden``, 0 meaning 4·d_model) by a mixture of ``moe_experts`` experts (top
    ``moe_top_k``) of width ``d_hidden // moe_top_k``, so that a token's active FFN parameters
    match the dense FFN.
    """

    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 1
    d_hidden: int = 0  # encoder FFN width; 0 = 4·d_model
    max_len: int = 64
    dropout: float = 0.1  # on the embeddings and in the classifier layers
    block_dropout: float = 0.0  # inside the encoder blocks (CPU dropout masks cost time)
    match_feature: bool = True
    ffn: str = "dense"
    moe_experts: int = 4
    moe_top_k: int = 2
    num_classes: int = 3

    BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {
        "vocab_size": (3, 1_000_000), "d_model": (2, 2048), "n_heads": (1, 64),
        "n_layers": (0, 24), "d_hidden": (0, 16384), "max_len": (1, 4096),
        "moe_experts": (1, 64), "moe_top_k": (1, 64), "num_classes": (2, 1000),
    }

    def __post_init__(self) -> None:
        for name, (low, high) in self.BOUNDS.items():
            check_int(name, getattr(self, name), low, high)
        check_probability("dropout", self.dropout)
        check_probability("block_dropout", self.block_dropout)
        check_bool("match_feature", self.match_feature)
        check_choice("ffn", self.ffn, FFNS)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by "
                             f"n_heads={self.n_heads}")
        if self.moe_top_k > self.moe_experts:
            raise ValueError(f"moe_top_k must be <= moe_experts={self.moe_experts}, "
                             f"got {self.moe_top_k}")
        if self.vocab_size * self.d_model > MAX_EMBEDDING_PARAMETERS:
            raise ValueError(f"vocab_size * d_model = {self.vocab_size * self.d_model} exceeds "
                             f"{MAX_EMBEDDING_PARAMETERS:,}")

    @classmethod
    def from_dict(cls, data: Any) -> WordPairConfig:
        """The config stored as ``data`` (a dict with every field and no other key)."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ValueError(f"{cls.__name__}: missing key(s) {missing}, unknown key(s) "
                             f"{unknown}")
        return cls(**data)

    def block(self) -> BlockConfig:
        """The `BlockConfig` of one bidirectional pre-LN encoder layer."""
        hidden = self.d_hidden or 4 * self.d_model
        moe = None
        if self.ffn == "moe":
            moe = MoEConfig(experts=self.moe_experts, top_k=self.moe_top_k,
                            hidden=max(1, hidden // self.moe_top_k), prefix="moe_")
        return BlockConfig(self.d_model, self.n_heads, hidden, dropout=self.block_dropout,
                           attention_backend="sdpa", moe=moe)


def check_pair_ids(premise: Tensor, hypothesis: Tensor, max_len: int) -> None:
    """Raise unless both are (B, L) integer tensors of one batch size, 1 <= L <= ``max_len``,
    and every row holds at least one real (non-zero) id."""
    for name, t in (("premise", premise), ("hypothesis", hypothesis)):
        if not isinstance(t, Tensor) or t.ndim != 2 or t.dtype.is_floating_point:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (batch, length) tensor of ids, got {shape}")
        if not 1 <= t.shape[1] <= max_len:
            raise ValueError(f"{name} length must be in [1, {max_len}], got {t.shape[1]}")
        if not bool((t != 0).any(1).all()):
            raise ValueError(f"every {name} row needs at least one non-padding id")
    if premise.shape[0] != hypothesis.shape[0]:
        raise ValueError(f"premise and hypothesis batch sizes differ: {premise.shape[0]} vs "
                         f"{hypothesis.shape[0]}")


def match_flags(ids: Tensor, other: Tensor) -> Tensor:
    """(B, L) int: 1 where the id at that position also occurs (unpadded) in ``other``."""
    same = (ids[:, :, None] == other[:, None, :]) & (other != 0)[:, None, :]
    return (same.any(-1) & (ids != 0)).long()


def masked_mean_max(x: Tensor, mask: Tensor) -> Tensor:
    """(B, L, d), (B, L) bool -> (B, 2d): mean and max over the real positions."""
    w = mask.unsqueeze(-1).to(x.dtype)
    mean = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
    big = torch.finfo(x.dtype).max
    top = x.masked_fill(~mask.unsqueeze(-1), -big).amax(1)
    return torch.cat([mean, top], dim=-1)


def encoder_blocks(config: WordPairConfig, n: int) -> nn.ModuleList:
    """``n`` bidirectional encoder blocks of ``config``."""
    block = config.block()
    return nn.ModuleList(TransformerBlock(block) for _ in range(n))


class WordPairEmbedding(nn.Module):
    """Word row + learned position (+ exact-match vector, + segment vector), then dropout."""

    def __init__(self, config: WordPairConfig, max_positions: int, segments: int = 0) -> None:
        super().__init__()
        d = config.d_model
        self.words = TokenEmbedding(config.vocab_size, d)
        self.positions = LearnedPositionalEmbedding(max_positions, d)
        self.match = nn.Embedding(2, d) if config.match_feature else None
        self.segment = nn.Embedding(segments, d) if segments else None
        for table in (self.match, self.segment):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, ids: Tensor, match: Tensor | None = None,
                segment: Tensor | None = None) -> Tensor:
        """(B, L) ids (and (B, L) match / segment indices) -> (B, L, d)."""
        x = self.positions(self.words(ids))
        if self.match is not None and match is not None:
            x = x + self.match(match)
        if self.segment is not None and segment is not None:
            x = x + self.segment(segment)
        return self.drop(x)


class WordPairModel(nn.Module):
    """What every word-level pair classifier shares: its config, class count, parameter counts
    and MoE layers. A subclass sets ``self.config`` and names the embedding rows one token's
    prediction never reads (`_unread_rows`)."""

    config: WordPairConfig

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self.config.num_classes

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def moe_layers(self) -> list[MoEFeedForward]:
        """The mixture-of-experts FFNs (empty for ``ffn="dense"``)."""
        return [m for m in self.modules() if isinstance(m, MoEFeedForward)]

    def _unread_rows(self) -> int:
        """Embedding rows (word and position) one token's prediction does not read."""
        raise NotImplementedError

    def active_parameters(self) -> int:
        """Parameters one token's prediction touches: all but the unread embedding rows and,
        in a mixture of experts, the experts a token is not routed to."""
        skipped = sum(sum(p.numel() for p in m.parameters()) - m.active_parameters()
                      for m in self.moe_layers())
        return self.num_parameters() - self._unread_rows() * self.config.d_model - skipped
