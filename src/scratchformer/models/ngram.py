r"""A byte-level character n-gram language model with interpolated Witten–Bell smoothing.

The alphabet is the 256 byte values (for ASCII source code a byte is a character), so bits per
byte need no tokenizer and every text, however unusual, has a finite probability. With ``h_k``
the last ``k`` bytes before position ``t``, ``C`` counts in the training files (n-grams never
cross a file boundary) and ``T(h)`` the number of distinct bytes seen after ``h``:

$$P_k(c\mid h_k) = \frac{C(h_k c) + T(h_k)\,P_{k-1}(c\mid h_{k-1})}{C(h_k) + T(h_k)},\qquad
P_{-1}(c) = 1/256,$$

and ``P_k = P_{k-1}`` for a history never seen. Each level mixes a distribution that sums to 1
with weights that sum to 1, so every ``P_k(\cdot\mid h)`` sums to 1 over the alphabet. Near the
start of a text the longest usable history is shorter (``min(t, order-1)`` bytes).

Counts are kept as sorted int64 keys (history bytes packed 8 bits each, the most recent lowest,
with the next byte below them), so training, scoring and the next-byte distribution are numpy
sorts and binary searches, not Python loops over the text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from scratchformer.validation import check_int

__all__ = ["MAX_ORDER", "ByteNGram"]

MAX_ORDER = 7  # history of 6 bytes + the next byte = 56 bits of an int64 key
_ALPHABET = 256


def _as_bytes(text: str | bytes) -> np.ndarray:
    """A text's UTF-8 bytes as an int64 array."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``values`` at the positions of ``query`` in the sorted ``keys`` (0 where absent)."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    idx = np.searchsorted(keys, query)
    idx_c = np.minimum(idx, keys.size - 1)
    found = keys[idx_c] == query
    return np.where(found, values[idx_c], 0)


class ByteNGram:
    """Interpolated Witten–Bell byte n-gram: ``order`` = history length + 1 (1..7)."""

    def __init__(self, order: int = 5) -> None:
        self.order = check_int("order", order, 1)
        if self.order > MAX_ORDER:
            raise ValueError(f"order must be <= {MAX_ORDER}, got {order}")
        self.fitted = False

    def fit(self, texts: Iterable[str | bytes]) -> ByteNGram:
        """Count the n-grams of every text (a text is one file; no gram crosses two)."""
        arrays = [_as_bytes(t) for t in texts]
        data = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        starts = np.repeat(np.cumsum([0] + [a.size for a in arrays[:-1]]),
                           [a.size for a in arrays]) if arrays else data
        depth = np.arange(data.size) - starts  # bytes of history inside the same text
        self.unigram = np.bincount(data, minlength=_ALPHABET).astype(np.float64)
        self.total = float(data.size)
        self.types0 = float((self.unigram > 0).sum())
        # Per history length k >= 1: sorted gram keys and counts; sorted history keys with
        # their total count C(h) and number of distinct next bytes T(h).
        self.grams: list[tuple[np.ndarray, np.ndarray]] = []
        self.hists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        ctx = np.zeros(data.size, dtype=np.int64)
        for k in range(1, self.order):
            shifted = np.zeros(data.size, dtype=np.int64)
            if k < data.size:
                shifted[k:] = data[:-k]
            ctx = ctx | (shifted << (8 * (k - 1)))
            valid = depth >= k
            keys = (ctx[valid] << 8) | data[valid]
            gram_keys, gram_counts = np.unique(keys, return_counts=True)
            hist_of = gram_keys >> 8
            hist_keys, first, types = np.unique(hist_of, return_index=True, return_counts=True)
            totals = np.add.reduceat(gram_counts, first) if gram_counts.size else gram_counts
            self.grams.append((gram_keys, gram_counts.astype(np.float64)))
            self.hists.append((hist_keys, totals.astype(np.float64), types.astype(np.float64)))
        self.fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the n-gram model has not been fitted; call fit(texts) first")

    def _base(self, nxt: np.ndarray) -> np.ndarray:
        """P_0 of the bytes ``nxt``: unigram counts interpolated with the uniform distribution."""
        return (self.unigram[nxt] + self.types0 / _ALPHABET) / (self.total + self.types0)

    def byte_probs(self, text: str | bytes) -> np.ndarray:
        """P(byte_t | the bytes before it in ``text``) for every byte of the text."""
        self._check_fitted()
        data = _as_bytes(text)
        p = self._base(data)
        ctx = np.zeros(data.size, dtype=np.int64)
        pos = np.arange(data.size)
        for k in range(1, self.order):
            shifted = np.zeros(data.size, dtype=np.int64)
            if k < data.size:
                shifted[k:] = data[:-k]
            ctx = ctx | (shifted << (8 * (k - 1)))
            p = self._mix(k, ctx, data, p, pos >= k)
        return p

    def _mix(self, k: int, ctx: np.ndarray, nxt: np.ndarray, lower: np.ndarray,
             usable: np.ndarray) -> np.ndarray:
        """P_k from P_{k-1} = ``lower`` where the history of length k is ``usable``."""
        hist_keys, totals, types = self.hists[k - 1]
        gram_keys, gram_counts = self.grams[k - 1]
        c_h = _lookup(hist_keys, totals, ctx)
        t_h = _lookup(hist_keys, types, ctx)
        c_hc = _lookup(gram_keys, gram_counts, (ctx << 8) | nxt)
        seen = usable & (c_h > 0)
        mixed = (c_hc + t_h * lower) / np.where(seen, c_h + t_h, 1.0)
        return np.where(seen, mixed, lower)

    def nll_bits(self, text: str | bytes) -> float:
        """Total negative log-likelihood of ``text`` in bits (every byte scored)."""
        return float(-np.log2(self.byte_probs(text)).sum())

    def bits_per_byte(self, texts: Sequence[str | bytes]) -> float:
        """Total bits over total UTF-8 bytes of ``texts`` (each scored from its own start)."""
        n = sum(_as_bytes(t).size for t in texts)
        if n == 0:
            raise ValueError("texts hold no bytes to score")
        return sum(self.nll_bits(t) for t in texts) / n

    def next_distribution(self, histories: Sequence[bytes]) -> np.ndarray:
        """(B, 256) next-byte probabilities after each history (its last order-1 bytes used)."""
        self._check_fitted()
        b = len(histories)
        nxt = np.broadcast_to(np.arange(_ALPHABET), (b, _ALPHABET))
        p = np.broadcast_to(self._base(np.arange(_ALPHABET)), (b, _ALPHABET)).copy()
        ctx = np.zeros((b, 1), dtype=np.int64)
        lengths = np.array([len(h) for h in histories])
        for k in range(1, self.order):
            prev = np.array([h[-k] if len(h) >= k else 0 for h in histories], dtype=np.int64)
            ctx = ctx | (prev[:, None] << (8 * (k - 1)))
            usable = np.broadcast_to((lengths >= k)[:, None], (b, _ALPHABET))
            p = self._mix(k, np.broadcast_to(ctx, (b, _ALPHABET)), nxt, p, usable)
        return p

    def extend(self, prompts: Sequence[str | bytes], n_new: int,
               choose: Callable[[Tensor], Tensor]) -> list[bytes]:
        """Each prompt's bytes extended by ``n_new`` bytes; ``choose`` maps (B, 256) log-probs
        to (B,) byte ids (greedy, or a sampler such as ``generation.sample_next_token``)."""
        check_int("n_new", n_new, 0)
        seqs = [bytearray(p.encode("utf-8") if isinstance(p, str) else p) for p in prompts]
        for _ in range(n_new):
            probs = self.next_distribution([bytes(s[-(self.order - 1):]) if self.order > 1
                                            else b"" for s in seqs])
            logits = torch.from_numpy(np.log(probs))
            for s, byte in zip(seqs, choose(logits).tolist(), strict=True):
                s.append(int(byte))
        return [bytes(s) for s in seqs]

    def __repr__(self) -> str:
        state = f"{int(self.total)} bytes" if self.fitted else "unfitted"
        return f"ByteNGram(order={self.order}, {state})"
