"""General-purpose compressors as language-model baselines: bits per byte of gzip, bz2 and lzma.

A compressor's output length is a code length, so ``8 * len(compress(x)) / len(x)`` is a bits per
byte figure on the same scale as a model's total NLL in bits over the text's UTF-8 bytes. Two
figures per compressor: **per file** (each file compressed alone, sizes summed: the fair
comparison for a model that scores each file from its own start) and **concatenated** (all files
in one stream, so later files can reuse earlier ones, as a model's training does). Each at its
strongest standard preset.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable, Sequence

__all__ = ["COMPRESSORS", "compressed_bits", "compression_report"]

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gzip.compress(b, compresslevel=9, mtime=0),
    "bz2": lambda b: bz2.compress(b, compresslevel=9),
    "lzma": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
}


def _raw(text: str | bytes) -> bytes:
    """A text's UTF-8 bytes."""
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def compressed_bits(text: str | bytes, method: str) -> int:
    """Bits of ``text`` compressed by ``method`` ("gzip", "bz2" or "lzma")."""
    if method not in COMPRESSORS:
        raise ValueError(f"method must be one of {sorted(COMPRESSORS)}, got {method!r}")
    return 8 * len(COMPRESSORS[method](_raw(text)))


def compression_report(texts: Sequence[str | bytes], separator: str = "\n"
                       ) -> dict[str, dict]:
    """Per compressor: bits/byte per file (summed), concatenated, and of each file."""
    raws = [_raw(t) for t in texts]
    n = sum(len(r) for r in raws)
    if n == 0:
        raise ValueError("texts hold no bytes to compress")
    joined = _raw(separator).join(raws)
    out: dict[str, dict] = {}
    for method in COMPRESSORS:
        bits = [compressed_bits(r, method) for r in raws]
        out[method] = {
            "per_file_bits_per_byte": sum(bits) / n,
            "concatenated_bits_per_byte": compressed_bits(joined, method) / len(joined),
            "file_bits_per_byte": [b / max(len(r), 1) for b, r in zip(bits, raws, strict=True)],
        }
    return out
