"""The catalogue of known data sets: file names, sizes, sha256 digests and download locations.

Digests and sizes are those of the read-only mirror described in ``shared/data/MANIFEST.md``.
Where the canonical public copy is the same bytes (Tiny Shakespeare, ETT) a download verifies
against the same digest. A file with ``url=None`` has no direct download (its canonical source
is an archive, or the mirror copy is a subset); a file with ``sha256=None`` has no published
digest, so a download is trusted on first use and its digest recorded (see ``resolve.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scratchformer.data.errors import UnknownDatasetError
from scratchformer.validation import check_optional_int

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def _check_plain_name(value: str, what: str) -> None:
    """Refuse names that could escape a folder when joined into a path."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} must be a plain file or folder name (letters, digits, '_', '.', '+', '-'; "
            f"no '/' or '..'), got {value!r}"
        )


@dataclass(frozen=True)
class DataFile:
    """One file of a data set: where it lives (``<dataset>/<name>``) and how to check it."""

    dataset: str
    name: str
    sha256: str | None
    size: int | None = None
    url: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        _check_plain_name(self.dataset, "dataset")
        _check_plain_name(self.name, "name")
        if self.sha256 is not None and not (
            isinstance(self.sha256, str) and _SHA256.fullmatch(self.sha256)
        ):
            raise ValueError(
                f"sha256 of {self.key} must be 64 lower-case hex digits or None, "
                f"got {self.sha256!r}"
            )
        check_optional_int(f"size of {self.key}", self.size, minimum=0)
        if self.url is not None and not (
            isinstance(self.url, str) and self.url.startswith(("http://", "https://"))
        ):
            raise ValueError(f"url of {self.key} must be an http(s) URL or None, got {self.url!r}")

    @property
    def key(self) -> str:
        """The file's relative path, ``<dataset>/<name>``, in the mirror and in the cache."""
        return f"{self.dataset}/{self.name}"


@dataclass(frozen=True)
class Dataset:
    """A named data set: its files plus the facts a user needs to cite and license it."""

    name: str
    description: str
    license: str
    homepage: str
    files: tuple[DataFile, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_plain_name(self.name, "name")
        for f in self.files:
            if f.dataset != self.name:
                raise ValueError(f"file {f.key} listed under data set {self.name!r}")
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"data set {self.name!r} lists a file name twice: {names}")

    def file(self, name: str) -> DataFile:
        """The catalogue entry of the file ``name``; unknown names raise with the known ones."""
        for f in self.files:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.files)
        raise UnknownDatasetError(
            f"data set {self.name!r} has no file {name!r}; its files are: {known}"
        )


_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data"
# ETT files at the commit whose bytes the mirror holds (MANIFEST.md), so the digest stays valid.
_ETT = (
    "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/"
    "1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small"
)
_DEEPCHEM = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets"
_MOLECULES_NOTE = (
    "digest of the mirror copy (from a GitHub copy of the MoleculeNet CSV); the DeepChem S3 "
    "copy was not compared byte for byte, so a download may fail its check"
)

CATALOGUE: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="tinyshakespeare",
            description="Tiny Shakespeare: 1,115,394 characters of Shakespeare's plays "
            "(Karpathy's char-rnn corpus).",
            license="public domain text (the char-rnn repository carries no license file)",
            homepage="https://github.com/karpathy/char-rnn",
            files=(
                DataFile(
                    "tinyshakespeare",
                    "input.txt",
                    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    size=1_115_394,
                    url=f"{_CHAR_RNN}/tinyshakespeare/input.txt",
                ),
            ),
        ),
        Dataset(
            name="snli_1.0",
            description="Stanford Natural Language Inference 1.0 (Bowman et al., EMNLP 2015).",
            license="CC BY-SA 4.0",
            homepage="https://nlp.stanford.edu/projects/snli/",
            files=(
                DataFile(
                    "snli_1.0",
                    "snli_1.0_train.jsonl.gz",
                    sha256="13653ad565db49de45bf9db59903252589807852930e5a419eb8d30ae655b654",
                    size=1_783_961,
                    note="PARTIAL: 27,874 of the 550,152 official train pairs, merged from "
                    "public subsets (see the mirror's MANIFEST.md); no public copy has these "
                    "bytes, so there is no download",
                ),
                DataFile(
                    "snli_1.0",
                    "snli_1.0_dev.jsonl.gz",
                    sha256="e5cfcc71b4846c40e06bae364a13312adeb434884e9a7cedf67037bdd212e39d",
                    size=1_004_730,
                    note="complete official dev split, gzipped; canonical source is the "
                    "snli_1.0.zip archive (uncompressed snli_1.0/snli_1.0_dev.jsonl)",
                ),
                DataFile(
                    "snli_1.0",
                    "snli_1.0_test.jsonl.gz",
                    sha256="ef5f0721f18e6aafd80f0d67aa2ef9784277aa08ba6a582c03fc381367282ac5",
                    size=1_005_357,
                    note="complete official test split, gzipped; canonical source is the "
                    "snli_1.0.zip archive (uncompressed snli_1.0/snli_1.0_test.jsonl)",
                ),
                DataFile(
                    "snli_1.0",
                    "snli_1.0.zip",
                    sha256=None,
                    url="https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
                    note="official archive holding snli_1.0/snli_1.0_{train,dev,test}.jsonl "
                    "uncompressed; no published sha256, so the first download is trusted and "
                    "its digest recorded; data/snli.py then checks the members it reads (dev "
                    "and test by the official jsonl sha256, train by its 550,152 lines)",
                ),
            ),
        ),
        Dataset(
            name="ETT",
            description="Electricity Transformer Temperature, hourly (Zhou et al., Informer, "
            "AAAI 2021); OT (oil temperature) is the target.",
            license="CC BY-ND 4.0",
            homepage="https://github.com/zhouhaoyi/ETDataset",
            files=(
                DataFile(
                    "ETT",
                    "ETTh1.csv",
                    sha256="f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                    size=2_589_657,
                    url=f"{_ETT}/ETTh1.csv",
                ),
                DataFile(
                    "ETT",
                    "ETTh2.csv",
                    sha256="a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
                    size=2_417_960,
                    url=f"{_ETT}/ETTh2.csv",
                ),
            ),
        ),
        Dataset(
            name="molecules",
            description="MoleculeNet regression sets: ESOL (Delaney), FreeSolv (SAMPL) and "
            "Lipophilicity (Wu et al., Chem. Sci. 2018).",
            license="ESOL and FreeSolv: no license statement found (unverified); "
            "Lipophilicity: ChEMBL data, CC BY-SA 3.0",
            homepage="https://moleculenet.org",
            files=(
                DataFile(
                    "molecules",
                    "delaney-processed.csv",
                    sha256="8c06a76f0c6487d29ab0f903e6a7a7139f189ab3c1178f159c8be8964602f189",
                    size=96_699,
                    url=f"{_DEEPCHEM}/delaney-processed.csv",
                    note=_MOLECULES_NOTE,
                ),
                DataFile(
                    "molecules",
                    "SAMPL.csv",
                    sha256="ab5895d914ee87cb563bd7b9611e869527bba45bec6b014d34dc495a0f9dcb72",
                    size=32_060,
                    url=f"{_DEEPCHEM}/SAMPL.csv",
                    note=_MOLECULES_NOTE,
                ),
                DataFile(
                    "molecules",
                    "Lipophilicity.csv",
                    sha256="aed41590cb30609d51d8e08ad3ff06495a76e80e211358801f596b10da69bacd",
                    size=282_606,
                    url=f"{_DEEPCHEM}/Lipophilicity.csv",
                    note=_MOLECULES_NOTE,
                ),
            ),
        ),
    )
}


def get_dataset(name: str) -> Dataset:
    """The catalogue entry of the data set ``name``; unknown names raise with the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"dataset must be a str, got {type(name).__name__}")
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join(sorted(CATALOGUE))
        raise UnknownDatasetError(f"unknown data set {name!r}; known data sets: {known}") from None


def get_file(dataset: str, name: str) -> DataFile:
    """The catalogue entry of file ``name`` in data set ``dataset``."""
    if not isinstance(name, str):
        raise TypeError(f"file name must be a str, got {type(name).__name__}")
    return get_dataset(dataset).file(name)
