"""Input format of sentence pairs for a causal classifier, and the BPE tokenizer it uses.

One pair becomes one sequence, read left to right by the GPT::

    <|premise|> A man is cooking food. <|hypothesis|> The kitchen is occupied. <|cls|>

The ``<|cls|>`` slot comes last so that, under the causal mask, its hidden state has read both
sentences; the classification head reads it. Each sentence is encoded with
``encode_ordinary`` on its own, so special-token strings typed by a user stay plain text and
cannot inject control tokens. ``<|pad|>`` fills batches on the right, after the slot.

Training batches are bucketed by length (`length_bucketed_batches`) so a batch holds pairs of
similar length and carries little padding, while the order of batches stays random.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scratchformer.tokenizers import BPETokenizer

__all__ = ["CLS", "EOT", "HYPOTHESIS", "PAD", "PREMISE", "SPECIAL_TOKENS", "EncodedPairs",
           "PairBatch", "encode_pair", "encode_pairs", "format_pair", "length_bucketed_batches",
           "pad_batch", "pair_batches", "train_pair_tokenizer"]

EOT, PREMISE, HYPOTHESIS, CLS, PAD = ("<|endoftext|>", "<|premise|>", "<|hypothesis|>",
                                      "<|cls|>", "<|pad|>")
SPECIAL_TOKENS = (EOT, PREMISE, HYPOTHESIS, CLS, PAD)


def format_pair(premise: str, hypothesis: str) -> str:
    """The pair as the text the model reads (for display; `encode_pair` builds the ids)."""
    return f"{PREMISE} {premise.strip()} {HYPOTHESIS} {hypothesis.strip()} {CLS}"


def _check_tokenizer(tok: BPETokenizer) -> None:
    missing = [s for s in SPECIAL_TOKENS if s not in tok.special_tokens]
    if missing:
        raise ValueError(f"tokenizer lacks the special token(s) {missing}; train it with "
                         f"train_pair_tokenizer")


def encode_pair(tok: BPETokenizer, premise: str, hypothesis: str,
                max_len: int | None = None) -> tuple[list[int], bool]:
    """Ids of the formatted pair and whether the premise was cut to fit ``max_len`` tokens.

    Only the premise is shortened (from its end), since the hypothesis is what is judged; a
    hypothesis that alone does not fit raises.
    """
    _check_tokenizer(tok)
    sp = tok.special_tokens
    p = tok.encode_ordinary(" " + premise.strip())
    h = tok.encode_ordinary(" " + hypothesis.strip())
    cut = False
    if max_len is not None:
        room = max_len - len(h) - 3
        if room < 1:
            raise ValueError(f"hypothesis of {len(h)} tokens leaves no room for the premise "
                             f"in max_len={max_len} tokens")
        if len(p) > room:
            p, cut = p[:room], True
    return [sp[PREMISE], *p, sp[HYPOTHESIS], *h, sp[CLS]], cut


@dataclass
class EncodedPairs:
    """Token ids of many pairs, their labels, and how many premises were shortened."""

    ids: list[list[int]]
    labels: Tensor  # (N,) int64
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self) -> int:
        """Total tokens over all pairs."""
        return sum(len(x) for x in self.ids)

    def head(self, n: int) -> EncodedPairs:
        """The first ``n`` pairs (all of them when ``n`` is 0 or not smaller than the set)."""
        if not n or n >= len(self):
            return self
        return EncodedPairs(self.ids[:n], self.labels[:n], 0)


def encode_pairs(tok: BPETokenizer, pairs: Sequence[tuple[str, str]], labels: Sequence[int],
                 max_len: int) -> EncodedPairs:
    """`encode_pair` of every pair, with the labels as a tensor."""
    if len(pairs) != len(labels):
        raise ValueError(f"pairs and labels differ in length: {len(pairs)} vs {len(labels)}")
    ids, truncated = [], 0
    for premise, hypothesis in pairs:
        x, cut = encode_pair(tok, premise, hypothesis, max_len)
        ids.append(x)
        truncated += cut
    return EncodedPairs(ids, torch.tensor(list(labels), dtype=torch.long), truncated)


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids (B, max length) and the lengths (B,) of ``rows``."""
    if not rows:
        raise ValueError("rows must hold at least one sequence")
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out, lengths


def train_pair_tokenizer(sentences: Sequence[str], vocab_size: int,
                         cache: Path | None = None) -> BPETokenizer:
    """BPE with the pair special tokens, trained on ``sentences``; reused from ``cache`` when the
    file there was trained on the same sentences with the same ``vocab_size``."""
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    meta = {"vocab_size": vocab_size, "sentences": len(sentences), "sha256": digest}
    meta_path = None if cache is None else cache.with_name(cache.name + ".meta.json")
    if (cache is not None and meta_path is not None and cache.is_file() and meta_path.is_file()
            and json.loads(meta_path.read_text(encoding="utf-8")) == meta):
        return BPETokenizer.load(cache)
    tok = BPETokenizer.train(sentences, vocab_size, special_tokens=SPECIAL_TOKENS)
    if cache is not None and meta_path is not None:
        tok.save(cache)
        meta_path.write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return tok


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, steps: int,
                            seed: int) -> list[list[int]]:
    """``steps`` batches of indices: each epoch is shuffled, cut into pools of 50 batches,
    each pool sorted by length and cut into batches, and the batches shuffled, so rows of a
    batch have similar lengths (little padding) while the order stays random."""
    gen = torch.Generator().manual_seed(seed)
    n, batch_size = len(lengths), min(batch_size, len(lengths))
    out: list[list[int]] = []
    while len(out) < steps:
        order = torch.randperm(n, generator=gen).tolist()
        epoch: list[list[int]] = []
        pool = 50 * batch_size
        for p in range(0, n, pool):
            chunk = sorted(order[p:p + pool], key=lambda i: lengths[i])
            epoch += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
        out += [epoch[i] for i in torch.randperm(len(epoch), generator=gen).tolist()]
    return out[:steps]


PairBatch = tuple[Tensor, Tensor, Tensor, int]
"""Right-padded ids (B, T), lengths (B,), labels (B,) and the number of real tokens."""


def pair_batches(data: EncodedPairs, batch_size: int, steps: int, pad_id: int,
                 seed: int) -> Callable[[int, int, torch.Generator], PairBatch]:
    """A trainer batch function ``(step, micro, generator) -> PairBatch`` over a
    length-bucketed schedule of ``steps`` batches (fixed by ``seed``, not by the generator)."""
    schedule = length_bucketed_batches([len(r) for r in data.ids], batch_size, steps, seed)

    def batches(step: int, micro: int, gen: torch.Generator) -> PairBatch:
        idx = schedule[step]
        x, lengths = pad_batch([data.ids[i] for i in idx], pad_id)
        return x, lengths, data.labels[idx], int(lengths.sum())

    return batches
