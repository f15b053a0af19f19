"""Input formats of sentence pairs: one BPE sequence for a causal classifier, and two word-id
sequences (premise, hypothesis) for the word-level models.

One pair becomes one sequence, read left to right by the GPT::

    <|premise|> A man is cooking food. <|hypothesis|> The kitchen is occupied. <|cls|>

The ``<|cls|>`` slot comes last so that, under the causal mask, its hidden state has read both
sentences; the classification head reads it. Each sentence is encoded with
``encode_ordinary`` on its own, so special-token strings typed by a user stay plain text and
cannot inject control tokens. ``<|pad|>`` fills batches on the right, after the slot.

The word-level models (`scratchformer.models.cross_attention`, `scratchformer.models.nli_encoder`)
read each sentence as lower-cased words (`word_tokens`) mapped by a `WordVocab` built from the
training split only. A word outside the vocabulary goes to one of ``oov_buckets`` rows chosen by
a stable hash, so two mentions of the same unseen word in a pair still look alike to the model.

Training batches are bucketed by length (`length_bucketed_batches`) so a batch holds pairs of
similar length and carries little padding, while the order of batches stays random.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scratchformer.tokenizers import BPETokenizer

__all__ = ["CLS", "EOT", "HYPOTHESIS", "PAD", "PREMISE", "SPECIAL_TOKENS", "WORD_CLS",
           "WORD_PAD", "WORD_SEP", "WORD_SPECIALS", "WORD_UNK", "EncodedPairs", "PairBatch",
           "WordPairBatch", "WordPairs", "WordVocab", "encode_pair", "encode_pairs",
           "encode_word_pairs", "format_pair", "length_bucketed_batches", "pad_batch",
           "pad_rows", "pair_batches", "train_pair_tokenizer", "word_pair_batches",
           "word_tokens"]

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


# ----------------------------------------------------------------------------- word level

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
WORD_PAD, WORD_UNK, WORD_CLS, WORD_SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
WORD_SPECIALS = (WORD_PAD, WORD_UNK, WORD_CLS, WORD_SEP)  # ids 0..3; padding is id 0
WORD_VOCAB_FORMAT = "scratchformer-word-vocab"
MAX_WORD_VOCAB = 1_000_000  # a vocabulary file claiming more is refused as corrupt


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits, with an apostrophe suffix)."""
    return _WORD.findall(text.lower())


class WordVocab:
    """Words of the training split (specials first), plus hashed rows for unseen words.

    ``vocab_size = len(words) + oov_buckets``; id 0 is padding, id 1 the unknown word (used for a
    sentence with no word at all, and for every unseen word when ``oov_buckets`` is 0), ids 2
    and 3 the ``[CLS]`` and ``[SEP]`` slots of a joint encoder.
    """

    def __init__(self, words: Sequence[str], oov_buckets: int = 0) -> None:
        words = list(words)
        if tuple(words[:len(WORD_SPECIALS)]) != WORD_SPECIALS:
            raise ValueError(f"a word vocabulary starts with {WORD_SPECIALS}, got {words[:4]}")
        if not all(isinstance(w, str) for w in words) or len(set(words)) != len(words):
            raise ValueError("vocabulary words must be distinct strings")
        self.oov_buckets = int(oov_buckets)
        if self.oov_buckets < 0:
            raise ValueError(f"oov_buckets must be >= 0, got {oov_buckets}")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        if len(self.words) + self.oov_buckets > MAX_WORD_VOCAB:
            raise ValueError(f"vocabulary of {len(words) + self.oov_buckets} ids exceeds "
                             f"{MAX_WORD_VOCAB}")

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 1, max_words: int = 0,
              oov_buckets: int = 0) -> WordVocab:
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical),
        at most ``max_words`` of them (0 = no cap)."""
        counts = Counter(w for s in sentences for w in word_tokens(s))
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        if max_words:
            kept = kept[:max_words]
        return cls([*WORD_SPECIALS, *kept], oov_buckets)

    @property
    def vocab_size(self) -> int:
        """Rows a model's embedding needs: words plus hash buckets."""
        return len(self.words) + self.oov_buckets

    @property
    def pad_id(self) -> int:
        """The padding id (0)."""
        return 0

    def word_id(self, word: str) -> int:
        """The id of ``word``: its row, else a stable hash bucket, else the unknown id."""
        i = self.index.get(word)
        if i is not None:
            return i
        if self.oov_buckets:
            return len(self.words) + zlib.crc32(word.encode("utf-8")) % self.oov_buckets
        return 1

    def encode(self, text: str, max_len: int | None = None) -> tuple[list[int], bool]:
        """Ids of the words of ``text`` (``[UNK]`` if it has none) and whether it was cut to
        ``max_len``."""
        ids = [self.word_id(w) for w in word_tokens(text)] or [1]
        if max_len is not None and len(ids) > max_len:
            return ids[:max_len], True
        return ids, False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `save` writes."""
        return {"format": WORD_VOCAB_FORMAT, "oov_buckets": self.oov_buckets, "words": self.words}

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> WordVocab:
        """The vocabulary `save` wrote; a malformed file raises ``ValueError`` naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read word vocabulary {path}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != WORD_VOCAB_FORMAT:
            raise ValueError(f"{path} is not a {WORD_VOCAB_FORMAT} file")
        words, buckets = data.get("words"), data.get("oov_buckets")
        if not isinstance(words, list) or isinstance(buckets, bool) or \
                not isinstance(buckets, int):
            raise ValueError(f"{path}: 'words' must be a list and 'oov_buckets' an int")
        try:
            return cls(words, buckets)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"WordVocab(words={len(self.words)}, oov_buckets={self.oov_buckets})"


@dataclass
class WordPairs:
    """Word ids of many pairs (premise and hypothesis apart), labels and sentences cut."""

    premises: list[list[int]]
    hypotheses: list[list[int]]
    labels: Tensor  # (N,) int64
    truncated: int

    def __len__(self) -> int:
        return len(self.premises)

    def tokens(self) -> int:
        """Total word ids over all pairs."""
        return sum(map(len, self.premises)) + sum(map(len, self.hypotheses))

    def head(self, n: int) -> WordPairs:
        """The first ``n`` pairs (all of them when ``n`` is 0 or not smaller than the set)."""
        if not n or n >= len(self):
            return self
        return WordPairs(self.premises[:n], self.hypotheses[:n], self.labels[:n], 0)

    def with_swapped(self, label: int) -> WordPairs:
        """These pairs plus, for each pair labelled ``label``, the pair with its two sentences
        exchanged (for a symmetric relation such as contradiction)."""
        idx = [i for i, y in enumerate(self.labels.tolist()) if y == label]
        return WordPairs(self.premises + [self.hypotheses[i] for i in idx],
                         self.hypotheses + [self.premises[i] for i in idx],
                         torch.cat([self.labels, self.labels[idx]]), self.truncated)


def encode_word_pairs(vocab: WordVocab, pairs: Sequence[tuple[str, str]],
                      labels: Sequence[int], max_len: int) -> WordPairs:
    """`WordVocab.encode` of both sentences of every pair, each cut to ``max_len`` words."""
    if len(pairs) != len(labels):
        raise ValueError(f"pairs and labels differ in length: {len(pairs)} vs {len(labels)}")
    prem, hyp, truncated = [], [], 0
    for premise, hypothesis in pairs:
        p, cut_p = vocab.encode(premise, max_len)
        h, cut_h = vocab.encode(hypothesis, max_len)
        prem.append(p)
        hyp.append(h)
        truncated += cut_p or cut_h
    return WordPairs(prem, hyp, torch.tensor(list(labels), dtype=torch.long), truncated)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0) -> Tensor:
    """Right-padded ids (B, longest row) of ``rows``."""
    return pad_batch(rows, pad_id)[0]


WordPairBatch = tuple[Tensor, Tensor, Tensor, int]
"""Padded premise ids (B, Lp), padded hypothesis ids (B, Lh), labels (B,), real tokens."""


def word_pair_batches(data: WordPairs, batch_size: int, steps: int,
                      seed: int) -> Callable[[int, int, torch.Generator], WordPairBatch]:
    """A trainer batch function over a length-bucketed schedule of ``steps`` batches (fixed by
    ``seed``); both sentences are padded with id 0."""
    lengths = [len(p) + len(h) for p, h in zip(data.premises, data.hypotheses, strict=True)]
    schedule = length_bucketed_batches(lengths, batch_size, steps, seed)

    def batches(step: int, micro: int, gen: torch.Generator) -> WordPairBatch:
        idx = schedule[step]
        return (pad_rows([data.premises[i] for i in idx]),
                pad_rows([data.hypotheses[i] for i in idx]), data.labels[idx],
                sum(lengths[i] for i in idx))

    return batches
