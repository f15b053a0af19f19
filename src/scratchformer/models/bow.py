"""Baselines for sentence-pair classification: majority class and bag-of-words logistic regression.

The logistic regression is written in torch (``nn.EmbeddingBag`` in ``sum`` mode holding one
weight row per feature is exactly ``W x`` for a sparse count vector ``x``), so it needs no
scikit-learn. Features are strings:

- hypothesis-only: ``h:<word>`` and ``hb:<w1>_<w2>`` (unigrams and bigrams of the hypothesis);
  on SNLI this measures the annotation artefacts (Gururangan et al., 2018; Poliak et al., 2018);
- pair: those, plus ``p:<word>`` for the premise and the cross features that make a bag of
  words able to compare the two sentences: ``in:<w>`` / ``out:<w>`` for each hypothesis word
  found / not found in the premise, and the bucketed share of hypothesis words in the premise;
- word_pair: the pair features plus one ``x:<p>|<h>`` feature per (premise word, hypothesis
  word) pair, the cross-unigrams of the lexicalised classifier of Bowman et al. (2015): they let
  a linear model learn that "man" in the premise and "woman" in the hypothesis signals a
  contradiction. There are many, so ``min_count`` and ``max_features`` cap the vocabulary.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.data.nli_pairs import word_tokens as words
from scratchformer.validation import check_int

__all__ = ["FEATURE_SETS", "BowLogisticRegression", "MajorityClass", "features", "words"]

FEATURE_SETS = ("hypothesis", "pair", "word_pair")


def features(premise: str, hypothesis: str, kind: str) -> list[str]:
    """The feature strings of one pair for feature set ``kind`` (one of `FEATURE_SETS`)."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"kind must be one of {FEATURE_SETS}, got {kind!r}")
    h = words(hypothesis)
    out = [f"h:{w}" for w in h] + [f"hb:{a}_{b}" for a, b in itertools.pairwise(h)]
    if kind == "hypothesis":
        return out
    p = words(premise)
    pset = set(p)
    out += [f"p:{w}" for w in p]
    out += [f"{'in' if w in pset else 'out'}:{w}" for w in h]
    share = sum(w in pset for w in h) / max(1, len(h))
    out.append(f"overlap:{min(4, int(share * 5))}")
    out.append(f"hlen:{min(len(h), 15) // 3}")
    if kind == "word_pair":
        out += [f"x:{a}|{b}" for a, b in sorted(set(itertools.product(p, h)))]
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

    ``min_count`` drops features seen fewer times in training (they would only be memorised);
    ``max_features`` (0 = no cap) keeps only that many of the most frequent ones.
    """

    def __init__(self, kind: str, num_classes: int = 3, min_count: int = 2,
                 l2: float = 1e-5, epochs: int = 8, lr: float = 0.05, batch_size: int = 256,
                 seed: int = 0, max_features: int = 0) -> None:
        super().__init__()
        if kind not in FEATURE_SETS:
            raise ValueError(f"kind must be one of {FEATURE_SETS}, got {kind!r}")
        for name, value in (("num_classes", num_classes), ("min_count", min_count),
                            ("epochs", epochs), ("batch_size", batch_size)):
            check_int(name, value)
        self.max_features = check_int("max_features", max_features, 0)
        self.kind, self.num_classes, self.min_count = kind, num_classes, min_count
        self.l2, self.epochs, self.lr, self.batch_size, self.seed = l2, epochs, lr, batch_size, seed
        self.vocab: dict[str, int] = {}
        self.weights = nn.EmbeddingBag(1, num_classes, mode="sum")
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def num_parameters(self) -> int:
        """Weights (features x classes) plus biases."""
        return sum(p.numel() for p in self.parameters())

    def _ids(self, feats: Sequence[str]) -> list[int]:
        """Vocabulary ids of feature strings (unknown features dropped)."""
        return [i for f in feats if (i := self.vocab.get(f)) is not None]

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor]:
        """Flat feature ids and per-row offsets for ``EmbeddingBag`` (unknown features dropped)."""
        ids: list[int] = []
        offsets: list[int] = []
        for premise, hypothesis in pairs:
            offsets.append(len(ids))
            ids.extend(self._ids(features(premise, hypothesis, self.kind)))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        """Logits (B, num_classes) of rows given as flat ids + offsets."""
        return self.weights(ids, offsets) + self.bias

    def fit(self, pairs: Sequence[tuple[str, str]], labels: Sequence[int]) -> BowLogisticRegression:
        """Build the feature vocabulary from ``pairs`` and train on ``labels``.

        The L2 penalty ``l2·‖W‖²`` enters as Adam's (coupled) weight decay ``2·l2`` on the
        feature weights, the same gradient without a pass over every weight in the graph.
        """
        if len(pairs) != len(labels) or not pairs:
            raise ValueError(f"pairs and labels must be non-empty and of equal length, got "
                             f"{len(pairs)} and {len(labels)}")
        feats = [features(p, h, self.kind) for p, h in pairs]
        counts = Counter(f for row in feats for f in row)
        kept = [f for f, c in counts.items() if c >= self.min_count]
        if self.max_features and len(kept) > self.max_features:
            kept = sorted(kept, key=lambda f: (-counts[f], f))[:self.max_features]
        kept.sort()
        self.vocab = {f: i for i, f in enumerate(kept)}
        self.weights = nn.EmbeddingBag(max(1, len(kept)), self.num_classes, mode="sum")
        nn.init.zeros_(self.weights.weight)
        gen = torch.Generator().manual_seed(self.seed)
        y = torch.tensor(list(labels), dtype=torch.long)
        rows = [self._ids(row) for row in feats]
        opt = torch.optim.Adam([{"params": [self.weights.weight], "weight_decay": 2 * self.l2},
                                {"params": [self.bias], "weight_decay": 0.0}], lr=self.lr)
        self.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(pairs), generator=gen).tolist()
            for b in range(0, len(order), self.batch_size):
                idx = order[b:b + self.batch_size]
                lens = [len(rows[i]) for i in idx]
                ids = torch.tensor([k for i in idx for k in rows[i]], dtype=torch.long)
                offsets = torch.tensor([0, *itertools.accumulate(lens)][:-1], dtype=torch.long)
                loss = nn.functional.cross_entropy(self(ids, offsets), y[idx])
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
