"""Data sets: a catalogue of known files, a resolver (mirror, cache, verified download), loaders.

``resolve("tinyshakespeare", "input.txt")`` returns a local path whose sha256 has been checked;
see :mod:`scratchformer.data.resolve` for the search order and the environment variables.
"""

from scratchformer.data.datasets import CATALOGUE, DataFile, Dataset, get_dataset, get_file
from scratchformer.data.download import download, sha256_file
from scratchformer.data.errors import (
    ChecksumError,
    DataError,
    DataUnavailableError,
    UnknownDatasetError,
    UnverifiedDownloadWarning,
)
from scratchformer.data.resolve import cache_dir, is_offline, mirror_dir, resolve, resolve_file
from scratchformer.data.shakespeare import CharTokenizer, load_tiny_shakespeare, train_val_split
from scratchformer.data.snli import load_snli

__all__ = [
    "CATALOGUE",
    "CharTokenizer",
    "ChecksumError",
    "DataError",
    "DataFile",
    "DataUnavailableError",
    "Dataset",
    "UnknownDatasetError",
    "UnverifiedDownloadWarning",
    "cache_dir",
    "download",
    "get_dataset",
    "get_file",
    "is_offline",
    "load_snli",
    "load_tiny_shakespeare",
    "mirror_dir",
    "resolve",
    "resolve_file",
    "sha256_file",
    "train_val_split",
]
