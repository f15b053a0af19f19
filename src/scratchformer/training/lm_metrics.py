"""Scores of a language model on held-out text: mean loss over random windows (as nanoGPT
reports it) and the exact negative log-likelihood of a whole text, in bits per character."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchformer.data.lm_text import TokenizedText, random_batch
from scratchformer.validation import check_int, check_real

__all__ = ["bits_per_char", "estimate_loss", "sequence_nll", "text_bits_per_char"]


def bits_per_char(total_nll_nats: float, n_chars: int) -> float:
    """Total negative log-likelihood (nats) as bits per character of the text it scores."""
    n_chars = check_int("n_chars", n_chars)
    total_nll_nats = check_real("total_nll_nats", total_nll_nats, minimum=0.0)
    return total_nll_nats / math.log(2) / n_chars


@torch.no_grad()
def sequence_nll(model: nn.Module, ids: Tensor, context_len: int,
                 batch_size: int = 64) -> Tensor:
    """NLL (nats) of each token ``ids[1:]`` given the tokens before it in its window, shape (N-1,).

    The text is cut into windows of ``context_len`` predictions that overlap by one token, so
    every token but the first is predicted exactly once (with 0 to context_len-1 tokens before
    it in the window, identically for any tokenizer's ids).
    """
    if not isinstance(ids, Tensor) or ids.ndim != 1 or ids.numel() < 2:
        raise ValueError(f"ids must be a 1-D tensor of >= 2 token ids, got {ids!r:.60}")
    device = next(model.parameters()).device
    n = ids.numel() - 1
    out = torch.empty(n)
    starts = torch.arange(0, n, context_len)
    full = starts[starts + context_len <= n]
    groups = [(full[b:b + batch_size], context_len) for b in range(0, len(full), batch_size)]
    if n % context_len:
        groups.append((starts[-1:], n % context_len))
    for group, length in groups:
        windows = ids[group[:, None] + torch.arange(length + 1)].to(device)
        logits = model(windows[:, :-1])[0].float()
        nll = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
        for r, s in enumerate(group.tolist()):
            out[s:s + length] = nll.view(len(group), length)[r].cpu()
    return out


def text_bits_per_char(model: nn.Module, data: TokenizedText, context_len: int) -> float:
    """Exact bits/char of ``model`` on the whole validation text (first token unscored)."""
    nll = sequence_nll(model, data.val, context_len)
    return bits_per_char(float(nll.double().sum()), int(data.val_chars[1:].sum()))


@torch.no_grad()
def estimate_loss(model: nn.Module, ids: Tensor, n_batches: int, batch_size: int,
                  context_len: int, seed: int) -> float:
    """Mean cross-entropy (nats/token) over ``n_batches`` random batches, as nanoGPT reports."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n_batches):
        x, y = random_batch(ids, batch_size, context_len, gen)
        losses.append(float(model(x.to(device), y.to(device))[1]))
    return float(np.mean(losses))
