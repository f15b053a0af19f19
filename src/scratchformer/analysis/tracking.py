"""Watching weights change shape during training: QKᵀ rank per head and the embedding spectrum.

`SpectrumTracker` is a `Trainer` ``on_step`` hook. Every ``every`` updates (and once more
after the last one) it records, for every attention layer ``l`` and head ``h``, the rank
measures of the head's bilinear score form ``W_Q^h W_K^hᵀ`` (d_model × d_model, rank at most
d_head; see analysis/rank.py and docs/derivations/matrix-rank.md), and the singular values of
the token-embedding matrix (vocab × d_model). Call `SpectrumTracker.record` before training to
store step 0.

The products are formed and decomposed in float64. The float32 weights are exact there, so the
product's trailing ``d_model - d_head`` singular values are rounding noise of order
``1e-16·σ_1`` and the numerical rank (threshold ``max(m, n)·eps·σ_1``, recorded per matrix)
counts only real directions: it is pinned at d_head for any generic weights, which is why the
effective and stable ranks are the measures that can show a head *using* fewer directions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.analysis.rank import qk_matrices, rank_summary
from scratchformer.nn.attention import MultiHeadAttention
from scratchformer.nn.embeddings import TokenEmbedding
from scratchformer.validation import check_int

__all__ = ["QK_MEASURES", "SpectrumTracker", "find_attention", "find_token_embedding"]

QK_MEASURES = ("numerical_rank", "rank_tolerance", "effective_rank", "stable_rank", "sigma_max")


def find_attention(model: nn.Module) -> list[MultiHeadAttention]:
    """The model's `MultiHeadAttention` modules in registration order (= layer order)."""
    found = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not found:
        raise ValueError(f"model ({type(model).__name__}) has no MultiHeadAttention module")
    return found


def find_token_embedding(model: nn.Module) -> Tensor:
    """The weight (vocab, d_model) of the model's first `TokenEmbedding` or ``nn.Embedding``."""
    for m in model.modules():
        if isinstance(m, (TokenEmbedding, nn.Embedding)):
            return m.weight
    raise ValueError(
        f"model ({type(model).__name__}) has no TokenEmbedding/nn.Embedding; pass embedding="
    )


class SpectrumTracker:
    """Trainer hook recording QKᵀ rank measures per layer/head and embedding singular values.

    ``attention(model)`` lists the attention modules (default `find_attention`) and
    ``embedding(model)`` returns the (vocab, d_model) token-embedding weight (default
    `find_token_embedding`). After training, ``steps`` holds the recorded steps, ``qk[name]``
    arrays of shape (n_records, n_layers, n_heads) for each name in `QK_MEASURES`, and
    ``embedding_sv`` one of shape (n_records, min(vocab, d_model)), largest value first.
    """

    def __init__(
        self,
        every: int,
        *,
        attention: Callable[[nn.Module], Sequence[MultiHeadAttention]] = find_attention,
        embedding: Callable[[nn.Module], Tensor] = find_token_embedding,
    ) -> None:
        self.every = check_int("every", every)  # record every k steps
        if not callable(attention) or not callable(embedding):
            raise TypeError("attention and embedding must be callables taking the model")
        self._attention, self._embedding = attention, embedding
        self.steps: list[int] = []
        self._qk: list[dict[str, np.ndarray]] = []
        self._sv: list[np.ndarray] = []
        self.d_head: int | None = None

    def __call__(self, trainer: Any, step: int, record: dict | None = None) -> None:
        """The ``on_step`` hook: record after every ``every``-th update and after the last."""
        if step % self.every == 0 or step == trainer.cfg.max_steps:
            self.record(trainer.model, step)

    @torch.no_grad()
    def record(self, model: nn.Module, step: int) -> None:
        """Measure ``model`` now and store the result under ``step`` (replacing a same-step one)."""
        step = check_int("step", step, minimum=0)
        layers = list(self._attention(model))
        if not layers:
            raise ValueError("the attention callable returned no modules")
        heads = {(m.n_heads, m.head_dim) for m in layers}
        if len(heads) != 1:
            raise ValueError(f"all layers must have the same head layout, got {sorted(heads)}")
        n_heads, self.d_head = heads.pop()
        w_q = torch.stack([m.w_q.detach().double() for m in layers])  # (L, d_model, d_model)
        w_k = torch.stack([m.w_k.detach().double() for m in layers])
        summary = rank_summary(qk_matrices(w_q, w_k, n_heads))  # each (L, H)
        qk = {k: summary[k].cpu().numpy() for k in QK_MEASURES}
        emb = self._embedding(model)
        if not isinstance(emb, Tensor) or emb.ndim != 2:
            raise ValueError(f"embedding(model) must return a 2-D tensor, got {emb!r:.80}")
        sv = torch.linalg.svdvals(emb.detach().double()).cpu().numpy()
        if self.steps and self.steps[-1] == step:  # e.g. the last step is also a multiple
            self._qk[-1], self._sv[-1] = qk, sv
            return
        if self.steps and step < self.steps[-1]:
            raise ValueError(f"steps must increase: got {step} after {self.steps[-1]}")
        self.steps.append(step)
        self._qk.append(qk)
        self._sv.append(sv)

    @property
    def qk(self) -> dict[str, np.ndarray]:
        """``{measure: (n_records, n_layers, n_heads) array}`` for each of `QK_MEASURES`."""
        if not self.steps:
            raise ValueError("nothing recorded yet; call record() or train with this hook")
        return {k: np.stack([r[k] for r in self._qk]) for k in QK_MEASURES}

    @property
    def embedding_sv(self) -> np.ndarray:
        """Embedding singular values per record, (n_records, min(vocab, d_model)), descending."""
        if not self.steps:
            raise ValueError("nothing recorded yet; call record() or train with this hook")
        return np.stack(self._sv)

    def as_dict(self) -> dict:
        """Everything recorded, as nested lists (JSON-able): steps, d_head, qk, embedding_sv."""
        return {
            "steps": list(self.steps),
            "d_head": self.d_head,
            "qk": {k: v.tolist() for k, v in self.qk.items()},
            "embedding_sv": self.embedding_sv.tolist(),
        }
