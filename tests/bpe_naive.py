"""Reference BPE written for clarity, not speed: the ground truth for the fast trainer and encoder.

``train_naive`` recounts every pair of every distinct chunk before each merge, the textbook
algorithm whose cost the derivation in docs/derivations/bpe-training.md compares against.
``encode_naive`` applies the learned merges to each chunk one after another, in rank order.
It shares nothing with scratchformer's tokenizer except the pre-tokenization regex text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import regex

from scratchformer.tokenizers.pretokenize import PATTERNS


def _replace(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(word):
        if tuple(word[i : i + 2]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_naive(
    texts: str | Iterable[str],
    num_merges: int,
    pattern: str = "gpt2",
    min_frequency: int = 2,
) -> tuple[list[tuple[int, int]], int]:
    """(merges, work): ``work`` is the number of pair occurrences counted, summed over merges."""
    if isinstance(texts, str):
        texts = [texts]
    chunks: Counter[str] = Counter()
    for text in texts:
        chunks.update(regex.findall(PATTERNS.get(pattern, pattern), text))
    words = [(list(c.encode("utf-8")), f) for c, f in chunks.items()]
    merges: list[tuple[int, int]] = []
    work = 0
    for k in range(num_merges):
        counts: Counter[tuple[int, int]] = Counter()
        for word, f in words:
            for j in range(len(word) - 1):
                counts[(word[j], word[j + 1])] += f
                work += 1
        if not counts:
            break
        # Most frequent first; ties to the smallest (left id, right id).
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        merges.append(best)
        words = [(_replace(word, best, 256 + k), f) for word, f in words]
    return merges, work


def encode_naive(text: str, merges: list[tuple[int, int]], pattern: str = "gpt2") -> list[int]:
    """Byte ids of each chunk, then every merge applied in rank order to all chunks."""
    ids: list[int] = []
    for chunk in regex.findall(PATTERNS.get(pattern, pattern), text):
        word = list(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            word = _replace(word, pair, 256 + k)
        ids.extend(word)
    return ids
