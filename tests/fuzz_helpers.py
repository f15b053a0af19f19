"""Shared by the fuzz and error tests: a hang guard, a file-tree snapshot, read-only folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class Hang(BaseException):
    """Raised by `time_limit`; a BaseException so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with `Hang` when the block runs longer than ``seconds`` (SIGALRM, main thread)."""

    def hang(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


def changed_outside(before: dict, after: dict, allowed: str | None = None) -> list[str]:
    """Paths added, removed or modified between two `tree` snapshots, except under
    ``allowed`` (a relative folder)."""
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k)
                  and not (allowed and (k == allowed or k.startswith(allowed + os.sep))))


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` (created) made unwritable even for root (``chattr +i``), else skip the test."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)],
                                        capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i refused)")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
