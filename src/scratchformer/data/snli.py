"""SNLI 1.0 (Stanford Natural Language Inference): premise/hypothesis pairs with 3 labels.

A split ``train``, ``dev`` or ``test`` is read from the first of:

1. ``snli_1.0/snli_1.0_<split>.jsonl.gz`` in the mirror or the cache (the layout of
   ``$SCRATCHFORMER_DATA``), checked against the catalogue sha256 by
   :func:`scratchformer.data.resolve`;
2. ``snli_1.0/snli_1.0_<split>.jsonl`` (uncompressed) in the mirror or the cache;
3. the official archive ``snli_1.0/snli_1.0.zip`` (mirror, cache, else downloaded from
   https://nlp.stanford.edu/projects/snli/snli_1.0.zip), member ``snli_1.0/snli_1.0_<split>.jsonl``.

How 2 and 3 are checked. The archive has no published sha256, so the catalogue cannot pin it:
its first download is trusted and the digest recorded beside it (see ``resolve.py``), or the
caller passes ``zip_sha256`` to require a digest. The jsonl read from a plain file or from the
archive is then checked by content: dev and test must have the sha256 of the official files
(known from the mirror, whose gzip copies hold the official bytes), and train must have the
official 550,152 lines (or the 27,874 of the mirror's partial train set). ``verify=False``
skips these content checks (for fixtures and hand-made files).

Rows whose ``gold_label`` is ``-`` (no annotator majority) are dropped and counted, as is
standard. A line that is not a JSON object, lacks ``sentence1``/``sentence2``/``gold_label``, or
has an unknown label raises `DataError` naming the file and the 1-based line number; so does a
file that yields no labelled pair at all (empty, or only ``-`` rows), which is never a usable
split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchformer.data.datasets import get_file
from scratchformer.data.download import sha256_file
from scratchformer.data.errors import ChecksumError, DataError, DataUnavailableError
from scratchformer.data.resolve import cache_dir, mirror_dir, resolve_file
from scratchformer.validation import check_choice

__all__ = [
    "LABELS",
    "OFFICIAL_SIZES",
    "SPLITS",
    "NLIPair",
    "SNLISplit",
    "load_snli",
    "parse_snli_lines",
    "read_snli_file",
]

SPLITS = ("train", "dev", "test")
LABELS = ("entailment", "neutral", "contradiction")
NO_GOLD = "-"
DATASET = "snli_1.0"
ZIP_NAME = "snli_1.0.zip"
ZIP_MEMBER = "snli_1.0/snli_1.0_{split}.jsonl"
# Lines (pairs, "-" rows included) of the official files and of the mirror's partial train set.
OFFICIAL_SIZES = {"train": 550_152, "dev": 10_000, "test": 10_000}
PARTIAL_TRAIN_SIZE = 27_874
# sha256 of the official uncompressed dev/test jsonl (shared/data/MANIFEST.md).
JSONL_SHA256 = {
    "dev": "9c03faff70182ef086ebfeed2cffbabb5fcc6a84a8b3314decbbb5b01f07f4bf",
    "test": "1147550151ca8b16ddb31d8dc0e739a670a65f7c3e64aac5951eaeff103fb220",
}


@dataclass(frozen=True)
class NLIPair:
    """One labelled pair: does ``premise`` entail, contradict or say nothing of ``hypothesis``."""

    premise: str
    hypothesis: str
    label: str  # one of LABELS

    @property
    def label_id(self) -> int:
        """The label's index in `LABELS`."""
        return LABELS.index(self.label)


@dataclass
class SNLISplit:
    """The labelled pairs of one split, where they came from and what was dropped."""

    split: str
    pairs: list[NLIPair]
    source: str  # the file (or "archive!member") the rows were read from
    lines: int  # JSON lines read, dropped rows included
    dropped_no_gold: int  # rows with gold label "-"
    label_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    def summary(self) -> dict:
        """A JSON-ready description: source, sizes and label counts."""
        return {"split": self.split, "source": self.source, "lines": self.lines,
                "pairs": len(self.pairs), "dropped_no_gold": self.dropped_no_gold,
                "label_counts": dict(self.label_counts)}


def parse_snli_lines(lines: Iterable[str | bytes], source: str, split: str = "?") -> SNLISplit:
    """Parse SNLI JSON lines; ``source`` names the file in errors (with the line number)."""
    pairs: list[NLIPair] = []
    dropped = n = 0
    for n, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as e:
            raise DataError(f"{source}, line {n}: not UTF-8 ({e.reason} at byte "
                            f"{e.start})") from None
        if not text.strip():
            raise DataError(f"{source}, line {n}: empty line; expected one JSON object per line")
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}, line {n}: malformed JSON ({e.msg} at column "
                            f"{e.colno})") from None
        except RecursionError:
            raise DataError(f"{source}, line {n}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise DataError(f"{source}, line {n}: expected a JSON object, got "
                            f"{type(row).__name__}")
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in row]
        if missing:
            raise DataError(f"{source}, line {n}: missing field(s) {missing}")
        label = row["gold_label"]
        if label == NO_GOLD:
            dropped += 1
            continue
        if label not in LABELS:
            raise DataError(f"{source}, line {n}: unknown gold_label {label!r}; expected one "
                            f"of {LABELS} or {NO_GOLD!r}")
        premise, hypothesis = row["sentence1"], row["sentence2"]
        if not isinstance(premise, str) or not isinstance(hypothesis, str):
            raise DataError(f"{source}, line {n}: sentence1 and sentence2 must be strings")
        pairs.append(NLIPair(premise, hypothesis, label))
    if not pairs:
        raise DataError(f"{source}: no labelled pairs ({n} line(s), {dropped} without a gold "
                        f"label); expected SNLI JSON lines")
    counts = Counter(p.label for p in pairs)
    return SNLISplit(split, pairs, source, n, dropped, {lab: counts[lab] for lab in LABELS})


def _open_lines(path: Path, split: str) -> Iterator[bytes]:
    """The raw lines of a ``.jsonl``, ``.jsonl.gz`` or SNLI ``.zip`` file (split's member)."""
    name = path.name
    if name.endswith(".zip"):
        member = ZIP_MEMBER.format(split=split)
        with zipfile.ZipFile(path) as zf:
            if member not in zf.namelist():
                raise DataUnavailableError(f"{path} has no member {member!r} (split {split!r})")
            with zf.open(member) as fh:
                yield from io.BufferedReader(fh)  # type: ignore[arg-type]
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def read_snli_file(path: str | os.PathLike, split: str) -> SNLISplit:
    """Read ``split`` from a plain/gzipped jsonl or from the official zip, no content check."""
    check_choice("split", split, SPLITS)
    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"SNLI {split} file {path} does not exist")
    source = f"{path}!{ZIP_MEMBER.format(split=split)}" if path.suffix == ".zip" else str(path)
    try:
        return parse_snli_lines(_open_lines(path, split), source, split)
    except DataError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, RecursionError,
            zlib.error, NotImplementedError, RuntimeError) as e:
        raise DataError(f"{source}: cannot be read as SNLI jsonl ({e})") from None


def _check_content(path: Path, split: str, data: SNLISplit) -> None:
    """Check a jsonl from a plain file or the archive: dev/test by sha256, train by line count."""
    if split in JSONL_SHA256:
        if path.suffix == ".zip":
            h = hashlib.sha256()
            for line in _open_lines(path, split):
                h.update(line)
            got = h.hexdigest()
        else:
            got = sha256_file(path)
        if got != JSONL_SHA256[split]:
            raise ChecksumError(f"{data.source}: sha256 {got}, expected the official "
                                f"{JSONL_SHA256[split]}; pass verify=False to read it anyway")
    elif data.lines not in (OFFICIAL_SIZES["train"], PARTIAL_TRAIN_SIZE):
        raise ChecksumError(f"{data.source}: {data.lines:,} lines, expected the official "
                            f"{OFFICIAL_SIZES['train']:,} (or the mirror's partial "
                            f"{PARTIAL_TRAIN_SIZE:,}); pass verify=False to read it anyway")


def _local_folders() -> list[Path]:
    """The mirror (if set) then the cache: where plain jsonl files are looked for."""
    mirror = mirror_dir()
    return [*([mirror / DATASET] if mirror is not None else []), cache_dir() / DATASET]


def load_snli(split: str, *, offline: bool | None = None, verify: bool = True,
              zip_sha256: str | None = None, progress: bool = True) -> SNLISplit:
    """The labelled pairs of SNLI ``split`` found as the module docstring describes."""
    check_choice("split", split, SPLITS)
    gz = get_file(DATASET, f"snli_1.0_{split}.jsonl.gz")
    looked: list[str] = []
    try:
        return read_snli_file(resolve_file(gz, offline=True, progress=progress), split)
    except DataUnavailableError as e:
        looked.append(str(e).split(". Searched")[0])
    for folder in _local_folders():
        plain = folder / f"snli_1.0_{split}.jsonl"
        if plain.is_file():
            data = read_snli_file(plain, split)
            if verify:
                _check_content(plain, split, data)
            return data
        looked.append(f"no {plain}")
    try:
        archive = resolve_file(get_file(DATASET, ZIP_NAME), offline=offline, progress=progress)
    except DataUnavailableError as e:
        raise DataUnavailableError(f"SNLI split {split!r} not found: {'; '.join(looked)}; "
                                   f"and the archive: {e}") from None
    if zip_sha256 is not None:
        got = sha256_file(archive)
        if got != zip_sha256.lower():
            raise ChecksumError(f"{archive}: sha256 {got}, expected zip_sha256={zip_sha256}")
    data = read_snli_file(archive, split)
    if verify:
        _check_content(archive, split, data)
    return data
