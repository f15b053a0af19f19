"""Tiny Shakespeare: the text, the usual 90/10 train/validation split and a character tokenizer.

The corpus is 1,115,394 characters with 65 distinct ones, small enough that a character-level
language model trains on a CPU in minutes, which is why it is the standard first data set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

from scratchformer.data.resolve import resolve
from scratchformer.validation import check_int, check_real


def load_tiny_shakespeare(*, offline: bool | None = None, progress: bool = True) -> str:
    """The Tiny Shakespeare text, found or downloaded by :func:`scratchformer.data.resolve`."""
    path = resolve("tinyshakespeare", "input.txt", offline=offline, progress=progress)
    # newline="" keeps the characters exactly as stored (no newline translation).
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into (train, val): the first floor(n·(1−val_fraction)) chars train.

    No shuffling, so validation is a contiguous later stretch of text that the model never
    sees. ``val_fraction`` is read as the decimal it prints as (0.1 means exactly 1/10), so
    the sizes do not depend on binary rounding; for Tiny Shakespeare 0.1 gives 1,003,854 and
    111,540 characters, the same as nanoGPT's ``int(0.9 * n)``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    val_fraction = check_real("val_fraction", val_fraction, minimum=0, maximum=1,
                              min_inclusive=False, max_inclusive=False)
    n = len(text)
    n_train = math.floor(n * (1 - Fraction(repr(val_fraction))))
    if n_train == 0 or n_train == n:
        raise ValueError(
            f"val_fraction={val_fraction!r} of a text of {n} characters leaves an empty "
            f"{'train' if n_train == 0 else 'validation'} part; use a longer text or another "
            f"fraction"
        )
    return text[:n_train], text[n_train:]


class CharTokenizer:
    """Maps each distinct character of a text to an id, in sorted character order.

    Sorted order makes the ids a function of the character set alone, so the same text always
    gives the same vocabulary; ``CharTokenizer(tok.vocab)`` rebuilds a saved tokenizer.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must contain at least one character, got an empty string")
        self.vocab: str = "".join(sorted(set(text)))
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters, i.e. the number of ids."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text``; a character outside the vocabulary raises."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            pos, ch = next((i, c) for i, c in enumerate(text) if c not in self.stoi)
            raise ValueError(
                f"text contains {ch!r} (U+{ord(ch):04X}) at position {pos}, which is not one "
                f"of the {self.vocab_size} characters of this tokenizer's vocabulary"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text whose characters have the ids ``ids`` (a list, or a 1-D tensor/array)."""
        if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"ids must be an iterable of ints, got {type(ids).__name__}")
        chars = []
        for pos, i in enumerate(ids):
            if not 0 <= check_int(f"ids[{pos}]", i, minimum=None) < self.vocab_size:
                raise ValueError(
                    f"ids[{pos}] = {i} is not a valid id; expected 0 <= id < {self.vocab_size}"
                )
            chars.append(self.vocab[i])
        return "".join(chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
