"""Errors raised while finding, downloading or checking a data set file.

Every error is a :class:`DataError`, and also a standard exception type that says what kind of
problem it is, so callers can catch either the family or the kind.
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of every error raised by ``scratchformer.data`` file resolution."""


class UnknownDatasetError(DataError, ValueError):
    """A data set or file name that the catalogue does not list."""


class DataUnavailableError(DataError, FileNotFoundError):
    """A file that is not on disk and may not or could not be downloaded."""


class ChecksumError(DataError, ValueError):
    """A file whose size or sha256 differs from the one the catalogue (or the cache) records."""


class UnverifiedDownloadWarning(UserWarning):
    """A download of a file that has no published sha256, so its bytes could not be checked."""
