"""Download one file over HTTP(S), checking its length and sha256 before it appears on disk.

The bytes stream into a temporary file beside the destination while a running sha256 is
computed; only a complete download with the right digest is moved into place with
``os.replace`` (atomic on one file system), so a reader never sees a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from scratchformer import __version__
from scratchformer.data.errors import ChecksumError, DataUnavailableError
from scratchformer.validation import check_int, check_real

CHUNK_SIZE = 1 << 16
USER_AGENT = f"scratchformer/{__version__} (+urllib)"



def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """The hex sha256 digest of the file at ``path``, read in chunks of ``chunk_size`` bytes."""
    chunk_size = check_int("chunk_size", chunk_size)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    desc: str | None = None,
    timeout: float = 60.0,
    chunk_size: int = CHUNK_SIZE,
) -> str:
    """Fetch ``url`` into ``dest`` atomically and return the sha256 of the bytes received.

    With ``sha256`` given, a different digest raises :class:`ChecksumError` naming both and
    leaves nothing behind. A network failure or a body shorter than its ``Content-Length``
    raises :class:`DataUnavailableError`. ``progress`` shows a tqdm bar on stderr.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    chunk_size = check_int("chunk_size", chunk_size)
    timeout = check_real("timeout", timeout, minimum=0, min_inclusive=False)  # in seconds
    dest = Path(dest)
    label = desc or dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a cached file gets the usual mode
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got, received, expected_len = _stream(url, out, progress, label, timeout, chunk_size)
        if expected_len is not None and received != expected_len:
            raise DataUnavailableError(
                f"download of {label} from {url} was cut short: received {received:,} of "
                f"{expected_len:,} bytes; try again"
            )
        if sha256 is not None and got != sha256:
            raise ChecksumError(
                f"sha256 mismatch for {label} downloaded from {url}: expected {sha256}, got "
                f"{got} ({received:,} bytes); the download was deleted. The file at that URL "
                f"has changed or was corrupted in transit; if it changed on purpose, update "
                f"the catalogue (scratchformer/data/datasets.py)"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return got


def _stream(
    url: str, out: BinaryIO, progress: bool, label: str, timeout: float, chunk_size: int
) -> tuple[str, int, int | None]:
    """Copy the body of ``url`` into ``out``; return (sha256, bytes received, Content-Length)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected_len = int(length) if length and length.isdigit() else None
            with tqdm(
                total=expected_len,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the open response; release its socket
        raise DataUnavailableError(
            f"download of {label} from {url} failed: HTTP {e.code} {e.reason}; if the file "
            f"has moved, update the catalogue URL, or put the file in place by hand"
        ) from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataUnavailableError(
            f"download of {label} from {url} failed: {reason}; check the network connection, "
            f"or put the file in place by hand"
        ) from e
    return digest.hexdigest(), received, expected_len
