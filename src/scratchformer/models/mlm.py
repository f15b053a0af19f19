r"""Masked-word pretraining of the word-level pair models (BERT's masked LM, on sentence pairs).

A fraction ``rate`` of the real words of both sentences is chosen; of those, 80% are replaced
by the ``[UNK]`` id (which plays BERT's ``[MASK]``: a word the model does not know), 10% by a
random word and 10% are left as they are. The model must name every chosen word from its
context:

* the **pair encoder** reads ``[CLS] p [SEP] h [SEP]`` jointly, so a masked word is predicted
  from its final state, as in BERT;
* the **cross-attention model** encodes each sentence on its own, so a masked word is predicted
  from ``[a; ã]``: its own state and the soft alignment with the *other* sentence (XLM's
  translation LM idea: a word of the hypothesis is often recoverable from the premise word it
  lines up with). This trains the embedding, the encoder and the alignment together.

The output layer is tied to the word embedding (``logits = f(x) Eᵀ + b``) as in BERT, so the
pretraining adds only the small transform ``f``; logits are computed at the chosen positions
only. Only unlabelled training sentences are read: no label, no dev or test text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.models.cross_attention import CrossAttentionNLI
from scratchformer.models.nli_encoder import CLS_ID, SEP_ID, PairEncoderNLI, pack_pair
from scratchformer.nn.norm import build_norm
from scratchformer.validation import check_probability

__all__ = ["FIRST_WORD_ID", "MASK_ID", "MaskedWordModel", "mask_words"]

MASK_ID = 1  # [UNK] of a `WordVocab`, standing in for BERT's [MASK]
FIRST_WORD_ID = 4  # ids below are [PAD], [UNK], [CLS], [SEP]: never chosen as random words


def mask_words(ids: Tensor, vocab_size: int, rate: float, gen: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
    """BERT's corruption of right-padded ``ids`` (B, L): ``(inputs, targets)`` where targets
    hold the original id at chosen positions and 0 elsewhere (padding is never chosen)."""
    check_probability("rate", rate)
    real = ids != 0
    u = torch.rand(ids.shape, generator=gen, device=ids.device)
    chosen = real & (u < rate)
    r = torch.rand(ids.shape, generator=gen, device=ids.device)
    random_ids = torch.randint(FIRST_WORD_ID, max(vocab_size, FIRST_WORD_ID + 1), ids.shape,
                               generator=gen, device=ids.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, MASK_ID), ids)
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return inputs, torch.where(chosen, ids, torch.zeros_like(ids))


class MaskedWordModel(nn.Module):
    """A word-pair model plus a tied masked-word head; ``forward`` returns the mean
    cross-entropy over the chosen words. The wrapped model's weights are shared, not copied."""

    def __init__(self, model: CrossAttentionNLI | PairEncoderNLI) -> None:
        super().__init__()
        if not isinstance(model, CrossAttentionNLI | PairEncoderNLI):
            raise TypeError(f"model must be a CrossAttentionNLI or PairEncoderNLI, got "
                            f"{type(model).__name__}")
        self.model = model
        d = model.config.d_model
        width = 2 * d if isinstance(model, CrossAttentionNLI) else d
        self.transform = nn.Sequential(nn.Linear(width, d), nn.GELU(), build_norm("layer", d))
        self.bias = nn.Parameter(torch.zeros(model.config.vocab_size))

    def states(self, premise: Tensor, hypothesis: Tensor, targets: tuple[Tensor, Tensor]
               ) -> tuple[Tensor, Tensor]:
        """(N, width) features of the N chosen positions and their (N,) target ids."""
        m = self.model
        if isinstance(m, PairEncoderNLI):
            x, _ = m.encode(premise, hypothesis)
            _, _, packed = pack_pair(premise, hypothesis, CLS_ID, SEP_ID, targets)
            return x[packed != 0], packed[packed != 0]
        a, b = m.encode(premise, hypothesis)
        a_tilde, b_tilde, _ = m.align(a, b, premise != 0, hypothesis != 0)
        ta, tb = targets
        feats = torch.cat([torch.cat([a, a_tilde], -1)[ta != 0],
                           torch.cat([b, b_tilde], -1)[tb != 0]])
        return feats, torch.cat([ta[ta != 0], tb[tb != 0]])

    def logits(self, feats: Tensor) -> Tensor:
        """(N, vocab_size) word logits from (N, width) features, through the tied embedding."""
        return self.transform(feats) @ self.model.embed.words.weight.T + self.bias

    def forward(self, premise: Tensor, hypothesis: Tensor, targets: tuple[Tensor, Tensor]
                ) -> tuple[Tensor, int]:
        """Mean cross-entropy over the chosen words of the (already corrupted) pair, and how
        many words were chosen (the loss is 0 when none were)."""
        feats, gold = self.states(premise, hypothesis, targets)
        if gold.numel() == 0:
            return feats.sum() * 0.0, 0
        return F.cross_entropy(self.logits(feats), gold), int(gold.numel())
