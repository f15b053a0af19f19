"""The Tiny Shakespeare figures quoted in docs/derivations/bpe-training.md, recomputed."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from scratchformer.tokenizers import count_chunks, train_merges
from scratchformer.tokenizers.bpe import BPETokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "derivations" / "bpe-training.md"


def _int(tex: str) -> int:
    """``109{,}448`` → 109448: an integer as the derivation writes it in TeX."""
    return int(tex.replace("{,}", "").replace(",", ""))


def _quoted() -> dict[str, list[int]]:
    """The corpus figures as quoted in the derivation, read from its text."""
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    num = r"(\d+(?:\{,\}\d{3})*)"
    shrink = re.search(
        rf"\$T = {num}\$ bytes to \$T_M = {num}\$ / \${num}\$ / \${num}\$ tokens after "
        rf"\$M = {num}\$ / \${num}\$ / \${num}\$ merges", text)
    sizes = re.search(rf"\(\$n = {num}\$, \$U = {num}\$, \$T = {num}\$\)", text)
    assert shrink and sizes, "the quoted Tiny Shakespeare figures moved or changed form"
    after = [_int(g) for g in shrink.groups()]
    return {"T": [after[0], _int(sizes[3])], "T_M": after[1:4], "M": after[4:7],
            "n": [_int(sizes[1])], "U": [_int(sizes[2])]}


@cache
def _chunks(text: str) -> Counter[str]:
    """The distinct pre-tokenized chunks of ``text``, counted once for both tests."""
    return count_chunks(text)


@pytest.fixture
def shakespeare(shared_data: Path) -> str:
    """The Tiny Shakespeare text of the data mirror (the test skips without one)."""
    path = shared_data / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not in the data mirror")
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def test_corpus_sizes_in_the_derivation(shakespeare: str) -> None:
    """n characters, U distinct pre-tokenized chunks of total byte length T, as quoted."""
    quoted = _quoted()
    chunks = _chunks(shakespeare)
    T = sum(len(chunk.encode("utf-8")) for chunk in chunks)
    assert quoted["n"] == [len(shakespeare)]
    assert quoted["U"] == [len(chunks)]
    assert quoted["T"] == [T, T]


def test_distinct_chunks_shrink_as_quoted(shakespeare: str) -> None:
    """T_M, the total length of the distinct chunks after M merges, for each quoted M.

    Training stops at the largest M; the first m merges of that run are the m-merge run's,
    since merges are chosen one at a time from the counts alone.
    """
    quoted = _quoted()
    chunks = _chunks(shakespeare)
    stats = train_merges(shakespeare, max(quoted["M"]))
    assert len(stats.merges) == max(quoted["M"])
    lengths = []
    for m in quoted["M"]:
        tok = BPETokenizer.from_merges(stats.merges[:m])
        lengths.append(sum(len(tok.encode_ordinary(chunk)) for chunk in chunks))
    assert lengths == quoted["T_M"]
