"""Baselines for sentence-pair classification: majority class and bag-of-words logistic regression.

The logistic regression is written in torch (``nn.EmbeddingBag`` in ``sum`` mode holding one
weight row per feature is exactly ``W x`` for a sparse count vector ``x``), so it needs no
scikit-learn. Features are strings:

- hypothesis-only: ``h:<word>`` and ``hb:<w1>_<w2>`` (unigrams and bigrams of the hypothesis);
  on SNLI this measures the annotation artefacts (Gururangan et al., 2018; Poliak et al., 2018);
- pair: those, plus ``p:<word>`` for the premise and the cross features that make a bag of
  words able to compare the two sentences: ``in:<w>`` / ``out:<w>`` for each hypothesis word
  found / not found in the premise, and the bucketed share of hypothesis words in the premise.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.validation import check_int

__all__ = ["BowLogisticRegression", "MajorityClass", "features", "words"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
FEATURE_SETS = ("hypothesis", "pair")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits, with an apostrophe suffix)."""
    return _WORD.findall(text.lower())


def features(premise: str, hypothesis: str, kind: str) -> list[str]:
    """The feature strings of one pair for feature set ``kind`` ("hypothesis" or "pair")."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"kind must be one of {FEATURE_SETS}, got {kind!r}")
    h = words(hypothesis)
    out = [f"h:{w}" for w in h] + [f"hb:{a}_{b}" for a, b in itertools.pairwise(h)]
    if kind == "pair":
        p = words(premise)
        pset = set(p)
        out += [f"p:{w}" for w in p]
        out += [f"{'in' if w in pset else 'out'}:{w}" for w in h]
        share = sum(w in pset for w in h) / max(1, len(h))
        out.append(f"overlap:{min(4, int(share * 5))}")
        out.append(f"hlen:{min(len(h), 15) // 3}")
    return out


@dataclass
class MajorityClass:
    """Predicts the most frequent training label for every input."""

    label: int = 0

    def fit(self, labels: Sequence[int]) -> MajorityClass:
        """Remember the most frequent of ``labels`` (ties go to the smallest id)."""
        if not labels:
            raise ValueError("labels must be non-empty to find a majority class")
        counts = Counter(labels)
        self.label = min(counts, key=lambda k: (-counts[k], k))
        return self

    def predict(self, n: int) -> Tensor:
        """``n`` copies of the majority label."""
        return torch.full((n,), self.label, dtype=torch.long)


class BowLogisticRegression(nn.Module):
    """Multinomial logistic regression on sparse feature counts, L2-regularised, trained by Adam.

    ``min_count`` drops features seen fewer times in training (they would only be memorised).
    """

    def __init__(self, kind: str, num_classes: int = 3, min_count: int = 2,
                 l2: float = 1e-5, epochs: int = 8, lr: float = 0.05, batch_size: int = 256,
                 seed: int = 0) -> None:
        super().__init__()
        if kind not in FEATURE_SETS:
            raise ValueError(f"kind must be one of {FEATURE_SETS}, got {kind!r}")
        for name, value in (("num_classes", num_classes), ("min_count", min_count),
                            ("epochs", epochs), ("batch_size", batch_size)):
            check_int(name, value)
        self.kind, self.num_classes, self.min_count = kind, num_classes, min_count
        self.l2, self.epochs, self.lr, self.batch_size, self.seed = l2, epochs, lr, batch_size, seed
        self.vocab: dict[str, int] = {}
        self.weights = nn.EmbeddingBag(1, num_classes, mode="sum")
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def num_parameters(self) -> int:
        """Weights (features x classes) plus biases."""
        return sum(p.numel() for p in self.parameters())

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor]:
        """Flat feature ids and per-row offsets for ``EmbeddingBag`` (unknown features dropped)."""
        ids: list[int] = []
        offsets: list[int] = []
        for premise, hypothesis in pairs:
            offsets.append(len(ids))
            ids.extend(i for f in features(premise, hypothesis, self.kind)
                       if (i := self.vocab.get(f)) is not None)
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """Logits (B, num_classes) of rows given as flat ids + offsets."""
        return self.weights(ids, offsets) + self.bias

    def fit(self, pairs: Sequence[tuple[str, str]], labels: Sequence[int]) -> BowLogisticRegression:
        """Build the feature vocabulary from ``pairs`` and train on ``labels``."""
        if len(pairs) != len(labels) or not pairs:
            raise ValueError(f"pairs and labels must be non-empty and of equal length, got "
                             f"{len(pairs)} and {len(labels)}")
        counts = Counter(f for p, h in pairs for f in features(p, h, self.kind))
        kept = sorted(f for f, c in counts.items() if c >= self.min_count)
        self.vocab = {f: i for i, f in enumerate(kept)}
        self.weights = nn.EmbeddingBag(max(1, len(kept)), self.num_classes, mode="sum")
        nn.init.zeros_(self.weights.weight)
        gen = torch.Generator().manual_seed(self.seed)
        y = torch.tensor(list(labels), dtype=torch.long)
        rows = [self._encode([pair]) for pair in pairs]
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        self.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(pairs), generator=gen).tolist()
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                ids = torch.cat([rows[i][0] for i in idx])
                lens = torch.tensor([rows[i][0].numel() for i in idx])
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]])
                logits = self(ids, offsets)
                loss = nn.functional.cross_entropy(logits, y[idx])
                loss = loss + self.l2 * self.weights.weight.pow(2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, pairs: Sequence[tuple[str, str]]) -> Tensor:
        """Class probabilities (N, num_classes) of ``pairs``."""
        if not self.vocab:
            raise RuntimeError("call fit before predict_proba")
        ids, offsets = self._encode(pairs)
        return torch.softmax(self(ids, offsets), dim=-1)

    def predict(self, pairs: Sequence[tuple[str, str]]) -> Tensor:
        """Predicted class ids (N,) of ``pairs``."""
        return self.predict_proba(pairs).argmax(-1)
