"""Python source code as a corpus: the ``.py`` files of the running interpreter's standard library.

Every machine that runs the library already holds this corpus, so nothing is downloaded; it does
differ between interpreters, so a corpus carries its Python version and a manifest hash of the
files it holds (relative path and content hash of each), which a study records.

What stays in: the library modules themselves. What is left out (``EXCLUDED_DIRS``), by folder
name anywhere in the tree: third-party packages (``site-packages``), test suites (``test``,
``tests``, ``idle_test``; they hold deliberately broken and non-UTF-8 files and would be more
than half the corpus), ``idlelib`` (an application, not library code), ``lib2to3`` (deprecated,
with Python 2 fixtures), ``turtledemo`` (demos), ``pydoc_data`` (one generated data file) and
``encodings`` (generated codec tables). Files that are not valid UTF-8 are skipped and counted.

Files are deduplicated by the sha256 of their bytes (the copy with the smallest path is kept) and
split **by file**, never by chunks: the split of a file is a function of the sha256 of its
relative path alone, so it is the same on every machine and does not move when other files come
or go.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scratchformer.data.errors import DataUnavailableError
from scratchformer.validation import check_int

__all__ = [
    "EXCLUDED_DIRS",
    "SPLITS",
    "CodeCorpus",
    "CodeFile",
    "collect_files",
    "dedupe",
    "load_code_corpus",
    "manifest_hash",
    "split_files",
    "split_of",
    "stdlib_root",
    "take_bytes",
]

EXCLUDED_DIRS = ("site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib",
                 "lib2to3", "turtledemo", "pydoc_data", "encodings", "__pycache__")
SPLITS = ("train", "val", "test")
_BUCKETS = 10_000


@dataclass(frozen=True)
class CodeFile:
    """One source file: its path relative to the corpus root (POSIX form) and its text."""

    path: str
    text: str

    @property
    def n_bytes(self) -> int:
        """Length of the text in UTF-8 bytes (the denominator of bits per byte)."""
        return len(self.text.encode("utf-8"))

    @property
    def sha256(self) -> str:
        """sha256 of the file's UTF-8 bytes (what deduplication compares)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class CodeCorpus:
    """The files of each split, with what identifies the corpus and what was left out."""

    root: str
    python_version: str
    splits: dict[str, list[CodeFile]]
    skipped_non_utf8: int = 0
    duplicates_dropped: int = 0
    excluded_dirs: tuple[str, ...] = EXCLUDED_DIRS
    fractions: tuple[float, ...] = (0.9, 0.05, 0.05)
    manifest: str = field(default="")

    def files(self, split: str) -> list[CodeFile]:
        """The files of ``split`` ("train", "val" or "test"), sorted by path."""
        if split not in self.splits:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.splits[split]

    def text(self, split: str, separator: str = "\n") -> str:
        """The files of ``split`` joined by ``separator``."""
        return separator.join(f.text for f in self.files(split))

    @property
    def source(self) -> str:
        """"stdlib" for the interpreter's standard library, else the root folder's name (no
        absolute path, so records do not name this machine's folders)."""
        return "stdlib" if Path(self.root) == stdlib_root() else Path(self.root).name

    def summary(self) -> dict:
        """What a study records about the corpus: version, manifest hash, sizes per split."""
        return {
            "python_version": self.python_version, "source": self.source,
            "manifest_sha256": self.manifest, "excluded_dirs": list(self.excluded_dirs),
            "fractions": list(self.fractions), "skipped_non_utf8": self.skipped_non_utf8,
            "duplicates_dropped": self.duplicates_dropped,
            "files": {s: len(fs) for s, fs in self.splits.items()},
            "bytes": {s: sum(f.n_bytes for f in fs) for s, fs in self.splits.items()},
        }


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataUnavailableError(f"the standard library folder {root} does not exist")
    return root


def collect_files(root: Path, exclude: Iterable[str] = EXCLUDED_DIRS,
                  max_file_bytes: int = 0) -> tuple[list[CodeFile], int]:
    """Every ``.py`` file under ``root`` outside folders named in ``exclude``, sorted by path,
    and the number skipped as not UTF-8; ``max_file_bytes`` > 0 skips larger files."""
    root = Path(root)
    if not root.is_dir():
        raise DataUnavailableError(f"code corpus root {root} is not a folder")
    check_int("max_file_bytes", max_file_bytes, 0)
    excluded = set(exclude)
    files: list[CodeFile] = []
    non_utf8 = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in excluded for part in rel.parts[:-1]) or not path.is_file():
            continue
        if max_file_bytes and path.stat().st_size > max_file_bytes:
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            non_utf8 += 1
            continue
        files.append(CodeFile(rel.as_posix(), text))
    return files, non_utf8


def dedupe(files: Sequence[CodeFile]) -> tuple[list[CodeFile], int]:
    """``files`` without repeated contents (the first by path kept) and how many were dropped."""
    seen: set[str] = set()
    kept: list[CodeFile] = []
    for f in sorted(files, key=lambda f: f.path):
        digest = f.sha256
        if digest not in seen:
            seen.add(digest)
            kept.append(f)
    return kept, len(files) - len(kept)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Three non-negative split fractions (train, val, test) that sum to 1."""
    fr = tuple(float(x) for x in fractions)
    if len(fr) != len(SPLITS) or any(x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be 3 non-negative numbers (train, val, test) summing "
                         f"to 1, got {tuple(fractions)}")
    return fr


def split_of(path: str, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
    """The split of the file at relative ``path``: a function of sha256(path) alone."""
    fr = _check_fractions(fractions)
    bucket = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") % _BUCKETS
    edge = 0.0
    for name, share in zip(SPLITS, fr, strict=True):
        edge += share * _BUCKETS
        if bucket < round(edge):
            return name
    return SPLITS[-1]


def split_files(files: Sequence[CodeFile], fractions: Sequence[float] = (0.9, 0.05, 0.05)
                ) -> dict[str, list[CodeFile]]:
    """``files`` grouped by `split_of` their path, each group sorted by path."""
    out: dict[str, list[CodeFile]] = {s: [] for s in SPLITS}
    for f in sorted(files, key=lambda f: f.path):
        out[split_of(f.path, fractions)].append(f)
    return out


def manifest_hash(files: Iterable[CodeFile]) -> str:
    """sha256 of the sorted lines ``path<TAB>sha256(content)``: names the exact file list."""
    lines = sorted(f"{f.path}\t{f.sha256}\n" for f in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def load_code_corpus(root: Path | None = None, *, fractions: Sequence[float] = (0.9, 0.05, 0.05),
                     exclude: Iterable[str] = EXCLUDED_DIRS, max_file_bytes: int = 0
                     ) -> CodeCorpus:
    """The deduplicated, split corpus of the ``.py`` files under ``root`` (default: the
    running interpreter's standard library)."""
    fr = _check_fractions(fractions)
    root = stdlib_root() if root is None else Path(root)
    exclude = tuple(exclude)
    files, non_utf8 = collect_files(root, exclude, max_file_bytes)
    kept, dropped = dedupe(files)
    if not kept:
        raise DataUnavailableError(f"no .py files found under {root} (excluding {exclude})")
    return CodeCorpus(str(root), platform.python_version(), split_files(kept, fr), non_utf8,
                      dropped, exclude, fr, manifest_hash(kept))


def take_bytes(files: Sequence[CodeFile], max_bytes: int) -> list[CodeFile]:
    """Whole files in the stable order of sha256(path) until they hold ``max_bytes`` bytes or
    more (0: all of them), returned sorted by path: a reproducible subset, not the alphabet's
    first modules."""
    check_int("max_bytes", max_bytes, 0)
    if not max_bytes:
        return list(files)
    order = sorted(files, key=lambda f: hashlib.sha256(f.path.encode("utf-8")).hexdigest())
    kept, total = [], 0
    for f in order:
        if total >= max_bytes:
            break
        kept.append(f)
        total += f.n_bytes
    return sorted(kept, key=lambda f: f.path)
