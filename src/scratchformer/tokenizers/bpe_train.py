"""The fast byte-level BPE trainer: count once, then update only what each merge touches.

1. Pre-tokenize every text and count the distinct chunks (chunk → frequency); every later step
   works on this table of distinct chunks, each a list of token ids starting as its UTF-8 bytes.
2. Count every adjacent pair once, weighted by chunk frequency, and remember which chunks hold
   each pair (``where``).
3. Repeatedly pop the best pair from a max-heap, merge it into a new token in exactly the chunks
   that hold it, and adjust the counts of the pairs those chunks lose and gain.

Only pairs that contain the new token can gain count, and those are pushed fresh; every other
count only falls, so its heap entry becomes an over-estimate that is corrected when popped
("lazy invalidation"). ``docs/derivations/bpe-training.md`` proves that this pops exactly the
pair a full recount would choose and derives the running time.

Tie-break (deterministic, the same in the naive reference in ``tests/bpe_naive.py``): the most
frequent pair wins; among equally frequent pairs, the smallest ``(left id, right id)``, i.e. the
pair of older tokens (byte tokens by byte value, merged tokens in creation order).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from scratchformer.tokenizers.pretokenize import resolve_pattern, split
from scratchformer.validation import check_int

Pair = tuple[int, int]


@dataclass
class TrainStats:
    """Work counters of one training run (checked against the bounds in the derivation)."""

    distinct_chunks: int = 0  # U: distinct pre-tokenized chunks
    positions: int = 0  # T: total length in bytes of the distinct chunks
    initial_pairs: int = 0  # P0: distinct adjacent pairs before any merge
    chunk_visits: int = 0  # chunks rewritten, summed over merges
    visited_length: int = 0  # lengths of those chunks (before rewriting), summed
    heap_pushes: int = 0  # entries ever pushed onto the heap
    stale_pops: int = 0  # popped entries whose count was out of date
    merges: list[Pair] = field(default_factory=list)


def count_chunks(texts: str | Iterable[str], pattern: str = "gpt2") -> Counter[str]:
    """Distinct pre-tokenized chunks of ``texts`` (one text, or an iterable) with frequencies."""
    if isinstance(texts, str):
        texts = [texts]
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got {type(text).__name__} at position {i}")
        counts.update(split(text, pattern))
    return counts


def merge_word(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """``word`` with every occurrence of ``pair`` replaced by ``new_id``, scanning left to right.

    Occurrences are taken greedily from the left, so for a pair ``(a, a)`` the run ``a a a``
    becomes ``new a``: overlapping occurrences are never both merged.
    """
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_merges(
    texts: str | Iterable[str],
    num_merges: int,
    *,
    pattern: str = "gpt2",
    min_frequency: int = 2,
    progress: bool = False,
) -> TrainStats:
    """Learn up to ``num_merges`` merges; merge ``k`` creates token id ``256 + k``.

    Training stops early when no pair occurs at least ``min_frequency`` times (weighted by chunk
    frequency). Returns the merges in rank order inside :class:`TrainStats`, with work counters.
    """
    check_int("num_merges", num_merges, 0)
    check_int("min_frequency", min_frequency, 1)
    pattern = resolve_pattern(pattern)

    chunk_counts = count_chunks(texts, pattern)
    words: list[list[int]] = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs: list[int] = list(chunk_counts.values())
    stats = TrainStats(distinct_chunks=len(words), positions=sum(map(len, words)))

    # Step 2: every pair counted once, and the chunks holding it.
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for i, (word, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in itertools.pairwise(word):
            counts[pair] = counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(i)
    stats.initial_pairs = len(counts)
    # Heap keys (-count, left, right): the smallest key is the most frequent pair, ties going
    # to the smallest (left, right).
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    stats.heap_pushes = len(heap)

    bar = tqdm(total=num_merges, desc="BPE merges", unit="merge", disable=not progress)
    new_id = 256
    while len(stats.merges) < num_merges and heap:
        neg, a, b = heapq.heappop(heap)
        pair = (a, b)
        current = counts.get(pair, 0)
        if -neg != current:  # stale: the count fell since this entry was pushed
            stats.stale_pops += 1
            if current > 0:
                heapq.heappush(heap, (-current, a, b))
                stats.heap_pushes += 1
            continue
        if current < min_frequency:
            break
        stats.merges.append(pair)
        # Step 3: rewrite only the chunks that hold the pair.
        gained: set[Pair] = set()
        lost: set[Pair] = set()
        for i in where.pop(pair):
            word, f = words[i], freqs[i]
            new_word = merge_word(word, pair, new_id)
            stats.chunk_visits += 1
            stats.visited_length += len(word)
            old_pairs = list(itertools.pairwise(word))
            new_pairs = list(itertools.pairwise(new_word))
            for p in old_pairs:
                counts[p] -= f
            for p in new_pairs:
                counts[p] = counts.get(p, 0) + f
                if p[0] == new_id or p[1] == new_id:
                    gained.add(p)
            old_set, new_set = set(old_pairs), set(new_pairs)
            for p in old_set - new_set:
                if p != pair:
                    where[p].discard(i)
                    lost.add(p)
            for p in new_set - old_set:
                where.setdefault(p, set()).add(i)
            words[i] = new_word
        del counts[pair]  # every occurrence is merged, so its count is now 0
        for p in lost:
            if counts[p] == 0:  # gone from every chunk: forget it (stale heap entries remain)
                del counts[p], where[p]
        for p in sorted(gained):
            heapq.heappush(heap, (-counts[p], p[0], p[1]))
            stats.heap_pushes += 1
        new_id += 1
        bar.update(1)
    bar.close()
    return stats
