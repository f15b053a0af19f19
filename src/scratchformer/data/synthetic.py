"""Synthetic binary tasks whose label depends on token *order* and on nothing else.

Every generator builds the data set from pairs: one multiset of tokens gives a positive
sequence and a negative one that is a rearrangement of the *same* tokens. Bag-of-tokens
statistics (counts, histograms, sums) are therefore identical across the two classes, and a
model that ignores order scores exactly 50% on such a test set
(docs/derivations/positional-ablation.md). Each generator takes an explicit
``torch.Generator``, so a seed pins the data set regardless of the global RNG state.

Tasks:

* ``"sorted"``: is the sequence in non-decreasing order? Negatives are random rearrangements
  that are not sorted (``negatives="shuffle"``) or the sorted sequence with two unequal tokens
  swapped (``negatives="swap"``, a harder, near-miss negative).
* ``"palindrome"``: does the sequence read the same backwards? Negatives are random
  rearrangements of the palindrome's tokens that are not palindromes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scratchformer.validation import check_choice, check_int

__all__ = ["TASKS", "is_palindrome", "is_sorted", "make_task", "palindrome_task", "sorted_task"]

TASKS = ("sorted", "palindrome")


def _check_common(
    num_examples: object, seq_len: object, vocab_size: object, generator: object
) -> tuple[int, int, int]:
    """Validate the arguments every task shares; ``num_examples`` must be even (pairs)."""
    n = check_int("num_examples", num_examples, 2)
    if n % 2:
        raise ValueError(
            f"num_examples must be even (one positive and one negative per multiset), got {n}"
        )
    length = check_int("seq_len", seq_len, 3)
    vocab = check_int("vocab_size", vocab_size, 2)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (seed it for reproducibility), "
            f"got {type(generator).__name__}"
        )
    return n, length, vocab


def is_sorted(tokens: Tensor) -> Tensor:
    """Boolean ``(N,)``: whether each row of the ``(N, L)`` tensor is non-decreasing."""
    return (tokens[:, 1:] >= tokens[:, :-1]).all(dim=-1)


def is_palindrome(tokens: Tensor) -> Tensor:
    """Boolean ``(N,)``: whether each row of the ``(N, L)`` tensor equals its reversal."""
    return (tokens == tokens.flip(-1)).all(dim=-1)


def _random_permutations(n: int, length: int, generator: torch.Generator) -> Tensor:
    """``(n, length)`` independent uniform permutations of ``0 .. length-1``."""
    return torch.rand(n, length, generator=generator, device=generator.device).argsort(dim=-1)


def _rearrange_until(
    positives: Tensor, bad: Callable[[Tensor], Tensor], generator: torch.Generator
) -> Tensor:
    """Random rearrangement of each row of ``positives``, redrawn while ``bad(row)`` holds.

    The caller guarantees that every row has at least one rearrangement that is not bad.
    """
    out = positives.gather(1, _random_permutations(*positives.shape, generator))
    redo = bad(out)
    while redo.any():
        rows = redo.nonzero().squeeze(-1)
        perm = _random_permutations(len(rows), positives.shape[1], generator)
        out[rows] = positives[rows].gather(1, perm)
        redo = bad(out)
    return out


def _interleave(
    positives: Tensor, negatives: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Stack both classes, label them 1/0, and shuffle the examples with ``generator``."""
    tokens = torch.cat([positives, negatives])
    labels = torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)
    labels[: len(positives)] = 1
    order = _random_permutations(1, len(tokens), generator)[0]
    return tokens[order], labels[order]


def _non_constant_rows(m: int, draw: Callable[[int], Tensor]) -> Tensor:
    """``m`` rows from ``draw(k)``, redrawing rows whose tokens are all equal (no negative)."""
    rows = draw(m)
    constant = (rows == rows[:, :1]).all(dim=-1)
    while constant.any():
        idx = constant.nonzero().squeeze(-1)
        rows[idx] = draw(len(idx))
        constant = (rows == rows[:, :1]).all(dim=-1)
    return rows


def sorted_task(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    *,
    generator: torch.Generator,
    negatives: str = "shuffle",
) -> tuple[Tensor, Tensor]:
    """``(tokens (N, L) long, labels (N,) long)``: label 1 iff the row is sorted ascending.

    Each multiset of ``seq_len`` i.i.d. uniform tokens yields its sorted order (label 1) and an
    unsorted rearrangement (label 0): a uniform one (``"shuffle"``) or one swap (``"swap"``).
    """
    n, length, vocab = _check_common(num_examples, seq_len, vocab_size, generator)
    negatives = check_choice("negatives", negatives, ("shuffle", "swap"))
    dev = generator.device

    def draw(k: int) -> Tensor:
        return torch.randint(0, vocab, (k, length), generator=generator, device=dev)

    positives = _non_constant_rows(n // 2, draw).sort(dim=-1).values
    if negatives == "shuffle":
        negs = _rearrange_until(positives, is_sorted, generator)
    else:
        # Swap positions i < j holding different tokens: the larger then precedes the smaller.
        negs = positives.clone()
        todo = torch.arange(len(positives), device=dev)  # rows still waiting for a swap
        while len(todo):
            ij = _random_permutations(len(todo), length, generator)[:, :2].sort(dim=-1).values
            a = positives[todo, ij[:, 0]]
            b = positives[todo, ij[:, 1]]
            ok = a != b
            done, i, j = todo[ok], ij[ok, 0], ij[ok, 1]
            negs[done, i], negs[done, j] = b[ok], a[ok]
            todo = todo[~ok]
    return _interleave(positives, negs, generator)


def palindrome_task(
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """``(tokens (N, L) long, labels (N,) long)``: label 1 iff the row is a palindrome.

    Positives mirror a uniform first half; negatives rearrange the same tokens into a
    non-palindrome.
    """
    n, length, vocab = _check_common(num_examples, seq_len, vocab_size, generator)
    dev = generator.device
    half = (length + 1) // 2

    def draw(k: int) -> Tensor:
        first = torch.randint(0, vocab, (k, half), generator=generator, device=dev)
        return torch.cat([first, first[:, : length // 2].flip(-1)], dim=-1)

    positives = _non_constant_rows(n // 2, draw)
    negs = _rearrange_until(positives, is_palindrome, generator)
    return _interleave(positives, negs, generator)


def make_task(
    task: str,
    num_examples: int,
    seq_len: int,
    vocab_size: int,
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Dispatch to the generator named ``task`` (one of :data:`TASKS`)."""
    if check_choice("task", task, TASKS) == "sorted":
        return sorted_task(num_examples, seq_len, vocab_size, generator=generator)
    return palindrome_task(num_examples, seq_len, vocab_size, generator=generator)
