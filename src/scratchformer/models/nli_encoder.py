r"""A BERT-style bidirectional encoder over ``[CLS] premise [SEP] hypothesis [SEP]``.

    premise (B, Lp), hypothesis (B, Lh) ids -> packed into one sequence per row, no padding
      in between -> word + position + segment (+ exact-match) embedding -> n_layers
      bidirectional blocks (key-padding mask) -> final norm -> [CLS] state -> pooler
      (linear + tanh, as BERT) -> dropout -> linear -> logits (B, num_classes)

Every token attends to both sentences from the first layer, so the model can learn alignment
itself; unlike BERT it is not pretrained, so on a small set it depends on the exact-match
embedding for the overlap signal (Devlin et al., 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.models.word_pair import (
    WordPairConfig,
    WordPairEmbedding,
    WordPairModel,
    check_pair_ids,
    encoder_blocks,
    match_flags,
)
from scratchformer.nn.norm import build_norm

__all__ = ["PairEncoderConfig", "PairEncoderNLI", "pack_pair"]

CLS_ID, SEP_ID = 2, 3  # the [CLS] and [SEP] ids of a `WordVocab`


@dataclass(frozen=True)
class PairEncoderConfig(WordPairConfig):
    """`WordPairConfig` of the joint encoder (its positions cover ``2·max_len + 3`` slots)."""


def pack_pair(premise: Tensor, hypothesis: Tensor, cls_id: int, sep_id: int,
              extra: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Joint ids ``[CLS] p [SEP] h [SEP]`` (B, L) right-padded with 0, segment ids (0 up to the
    first [SEP], then 1) and, if ``extra`` holds per-token values of p and h, those values
    packed the same way (0 at the special slots)."""
    B, Lp = premise.shape
    Lh = hypothesis.shape[1]
    lp, lh = (premise != 0).sum(1), (hypothesis != 0).sum(1)
    total = lp + lh + 3
    L = int(total.max())
    dev = premise.device
    rows_p = torch.arange(B, device=dev)[:, None].expand(B, Lp)
    rows_h = torch.arange(B, device=dev)[:, None].expand(B, Lh)
    pos_p = 1 + torch.arange(Lp, device=dev)[None, :].expand(B, Lp)
    pos_h = 2 + lp[:, None] + torch.arange(Lh, device=dev)[None, :]
    mp, mh = premise != 0, hypothesis != 0
    rows = torch.arange(B, device=dev)

    def place(p_vals: Tensor, h_vals: Tensor, first: int, sep: int) -> Tensor:
        out = torch.zeros(B, L, dtype=p_vals.dtype, device=dev)
        out[rows_p[mp], pos_p[mp]] = p_vals[mp]
        out[rows_h[mh], pos_h[mh]] = h_vals[mh]
        out[:, 0] = first
        out[rows, 1 + lp] = sep
        out[rows, 2 + lp + lh] = sep
        return out

    ids = place(premise, hypothesis, cls_id, sep_id)
    segment = (torch.arange(L, device=dev)[None, :] >= (2 + lp)[:, None]).long()
    segment = segment * (torch.arange(L, device=dev)[None, :] < total[:, None])
    packed = None if extra is None else place(extra[0], extra[1], 0, 0)
    return ids, segment, packed if packed is not None else torch.zeros_like(ids)


class PairEncoderNLI(WordPairModel):
    """Bidirectional transformer over the packed pair, classified from its [CLS] state."""

    def __init__(self, config: PairEncoderConfig) -> None:
        super().__init__()
        if not isinstance(config, PairEncoderConfig):
            raise TypeError(f"config must be a PairEncoderConfig, got {type(config).__name__}")
        self.config = c = config
        self.embed = WordPairEmbedding(c, 2 * c.max_len + 3, segments=2)
        self.encoder = encoder_blocks(c, c.n_layers)
        self.norm = build_norm("layer", c.d_model)
        self.pooler = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.Tanh())
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.d_model, c.num_classes))

    def _unread_rows(self) -> int:
        """All word rows but the token's own, and all positions but its own."""
        return self.config.vocab_size - 1 + 2 * self.config.max_len + 2

    def encode(self, premise: Tensor, hypothesis: Tensor) -> tuple[Tensor, Tensor]:
        """Final-norm states (B, L, d) of the packed pair and its packed ids (B, L)."""
        check_pair_ids(premise, hypothesis, self.config.max_len)
        flags = (match_flags(premise, hypothesis), match_flags(hypothesis, premise))
        ids, segment, match = pack_pair(premise, hypothesis, CLS_ID, SEP_ID, flags)
        mask = ids != 0
        x = self.embed(ids, match, segment)
        for block in self.encoder:
            x = block(x, attn_mask=mask[:, None, None, :])
        return self.norm(x), ids

    def forward(self, premise: Tensor, hypothesis: Tensor) -> Tensor:
        """Class logits (B, num_classes) of right-padded premise/hypothesis ids (0 = pad)."""
        return self.head(self.pooler(self.encode(premise, hypothesis)[0][:, 0]))
