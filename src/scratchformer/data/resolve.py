"""Find a data set file on disk, or download it once, and check its sha256 either way.

Search order for ``<dataset>/<file>``:

1. the read-only mirror named by ``$SCRATCHFORMER_DATA`` (layout ``<dataset>/<file>``);
2. the user cache, ``$SCRATCHFORMER_CACHE`` or else ``~/.cache/scratchformer``;
3. a download from the catalogue URL into the cache (refused when ``$SCRATCHFORMER_OFFLINE``
   is set to 1/true/yes/on).

Every file is verified against the catalogue sha256 each time it is resolved (the files are a
few MB, so this costs milliseconds); within one process a digest is remembered per
(path, size, mtime), so repeated loads do not re-read the file. A mirror file that fails the
check raises (the mirror is read-only); a cached file that fails it is deleted and downloaded
again, or, where no download is possible (offline, or no download location), deleted with a
warning that says so, and the search goes on as if it had never been there. A file with no
published digest is trusted on first download: the digest it arrived with is written beside it
as ``<file>.sha256`` and later reads are checked against that.

A value of ``$SCRATCHFORMER_OFFLINE`` other than the listed ones raises `SettingError`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from scratchformer.data.datasets import DataFile, get_file
from scratchformer.data.download import download, sha256_file
from scratchformer.data.errors import (
    ChecksumError,
    DataError,
    DataUnavailableError,
    UnverifiedDownloadWarning,
)

ENV_DATA = "SCRATCHFORMER_DATA"
ENV_CACHE = "SCRATCHFORMER_CACHE"
ENV_OFFLINE = "SCRATCHFORMER_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# Digests already computed in this process, keyed by (path, size, mtime_ns).
_DIGESTS: dict[tuple[str, int, int], str] = {}


class SettingError(DataError, ValueError):
    """An environment variable of the data layer set to a value it does not understand."""


def mirror_dir() -> Path | None:
    """The read-only data mirror named by ``$SCRATCHFORMER_DATA``, or None when it is unset."""
    raw = os.environ.get(ENV_DATA, "")
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise DataUnavailableError(
            f"{ENV_DATA}={raw!r} is not a folder; point it at a data mirror (layout "
            f"<dataset>/<file>) or unset it"
        )
    return path


def cache_dir() -> Path:
    """The download cache: ``$SCRATCHFORMER_CACHE``, else ``~/.cache/scratchformer``."""
    raw = os.environ.get(ENV_CACHE, "")
    if raw:
        return Path(raw).expanduser()
    return Path.home() / ".cache" / "scratchformer"


def is_offline() -> bool:
    """Whether ``$SCRATCHFORMER_OFFLINE`` forbids downloads (1/true/yes/on; 0/false/no/off)."""
    raw = os.environ.get(ENV_OFFLINE, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingError(
        f"{ENV_OFFLINE} must be one of 1/true/yes/on or 0/false/no/off, "
        f"got {os.environ[ENV_OFFLINE]!r}"
    )


def resolve(dataset: str, name: str, *, offline: bool | None = None, progress: bool = True) -> Path:
    """The local path of catalogue file ``<dataset>/<name>``, downloading it if needed.

    ``offline`` overrides ``$SCRATCHFORMER_OFFLINE``; ``progress`` shows a download bar.
    """
    return resolve_file(get_file(dataset, name), offline=offline, progress=progress)


def resolve_file(entry: DataFile, *, offline: bool | None = None, progress: bool = True) -> Path:
    """The local path of ``entry`` (mirror, then cache, then download); see the module doc."""
    if not isinstance(entry, DataFile):
        raise TypeError(f"entry must be a DataFile, got {type(entry).__name__}")
    if offline is None:
        offline = is_offline()
        why_offline = f"{ENV_OFFLINE}={os.environ.get(ENV_OFFLINE)} forbids downloads"
    elif isinstance(offline, bool):
        why_offline = "the caller passed offline=True"
    else:
        raise TypeError(f"offline must be a bool or None, got {offline!r}")

    looked: list[str] = []
    mirror = mirror_dir()
    if mirror is None:
        looked.append(f"${ENV_DATA} is unset")
    else:
        path = mirror / entry.dataset / entry.name
        if path.is_file():
            problem = _check(path, entry.sha256, entry.size)
            if problem:
                raise ChecksumError(
                    f"{entry.key} in the read-only mirror {ENV_DATA}={mirror} is not the "
                    f"expected file: {problem}. Replace it with a good copy, or unset "
                    f"{ENV_DATA} to use the cache and download instead"
                )
            return path
        looked.append(f"not in ${ENV_DATA} (looked for {path})")

    cached = cache_dir() / entry.dataset / entry.name
    record = _record_path(cached)
    if cached.is_file():
        expected = entry.sha256 or _read_record(record)
        problem = _check(cached, expected, entry.size)
        if not problem:
            return cached
        if entry.url is None:
            action = "deleting it; it has no download location, so nothing replaces it"
        elif offline:
            action = f"deleting it; {why_offline}, so it is not downloaded again"
        else:
            action = "deleting it and downloading it again"
        warnings.warn(
            f"cached {entry.key} at {cached} is not the expected file ({problem}); {action}",
            stacklevel=2,
        )
        cached.unlink()
        record.unlink(missing_ok=True)
        looked.append(f"the cached copy at {cached} was bad and has been deleted")
    else:
        looked.append(f"not in the cache (looked for {cached})")

    where = "; ".join(looked)
    if entry.url is None:
        raise DataUnavailableError(
            f"{entry.key} was not found and has no download location ({entry.note or 'none'})."
            f" Searched: {where}. To fix: set {ENV_DATA} to a folder that holds {entry.key}, "
            f"or copy the file to {cached}"
        )
    if offline:
        raise DataUnavailableError(
            f"{entry.key} was not found and {why_offline}. Searched: {where}. To fix: set "
            f"{ENV_DATA} to a folder that holds {entry.key}, copy the file to {cached}, or "
            f"allow the download from {entry.url}"
        )
    try:
        got = download(entry.url, cached, sha256=entry.sha256, progress=progress, desc=entry.key)
    except DataUnavailableError as e:
        raise DataUnavailableError(
            f"{e}. Searched before downloading: {where}. To avoid the download: set {ENV_DATA} "
            f"to a folder that holds {entry.key}, or copy the file to {cached}"
        ) from e
    stat = cached.stat()
    _DIGESTS[(str(cached.resolve()), stat.st_size, stat.st_mtime_ns)] = got
    if entry.sha256 is None:
        record.write_text(got + "\n", encoding="ascii")
        warnings.warn(
            f"{entry.key} has no published sha256, so the download from {entry.url} could not "
            f"be checked; its sha256 {got} was recorded in {record} and later reads are "
            f"checked against it",
            UnverifiedDownloadWarning,
            stacklevel=2,
        )
    return cached


def _record_path(path: Path) -> Path:
    """Where the digest of a download without a published sha256 is recorded."""
    return path.with_name(path.name + ".sha256")


def _read_record(record: Path) -> str | None:
    """The digest recorded at ``record``, or None when there is none."""
    try:
        return record.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def _check(path: Path, sha256: str | None, size: int | None) -> str | None:
    """Why ``path`` is not the file with ``size`` bytes and digest ``sha256``; None if it is."""
    stat = path.stat()
    if size is not None and stat.st_size != size:
        return f"size {stat.st_size:,} bytes, expected {size:,}"
    if sha256 is None:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    got = _DIGESTS.get(key)
    if got is None:
        got = _DIGESTS[key] = sha256_file(path)
    if got != sha256:
        return f"sha256 {got}, expected {sha256}"
    return None
