"""Running a study: seed, time, and store ``metrics.json`` beside the figures it wrote."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import platform
import random
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scratchformer import __version__
from scratchformer.experiments.registry import Study

FIGURE_SUFFIXES = {".png", ".svg", ".pdf"}
DEFAULT_RESULTS = Path("results")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a study reruns to the same numbers on CPU."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries that shape the numbers."""
    import numpy as np
    import torch

    return {
        "scratchformer": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _jsonable(obj: Any) -> Any:
    """Convert tuples, paths, numpy and torch scalars into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def _new_temp(folder: Path, prefix: str) -> tuple[int, Path]:
    """A new file in ``folder``, opened for writing, with the umask's permissions (not 0600)."""
    while True:
        path = folder / f".{prefix}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be created in it, or raise OSError.

    Called before a study runs, so that a folder it cannot write fails in a second, not after
    the whole study.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = _new_temp(folder, "write-test")
    os.close(fd)
    probe.unlink()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and ``os.replace`` so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False, allow_nan=True) + "\n"
    fd, tmp = _new_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_study(
    study: Study,
    cfg: Any,
    out_root: Path = DEFAULT_RESULTS,
    profile: str = "quick",
) -> dict:
    """Run ``study`` with ``cfg``; write ``out_root/<name>/metrics.json``; return the record."""
    out = Path(out_root) / study.name
    check_writable(out)
    seed = getattr(cfg, "seed", 0)
    seed_everything(seed)
    start = time.perf_counter()
    metrics = study.run(cfg, out)
    wall = time.perf_counter() - start
    figures = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in FIGURE_SUFFIXES
    )
    record = {
        "study": study.name,
        "description": study.description,
        "profile": profile,
        "config": dataclasses.asdict(cfg),
        "seed": seed,
        "versions": versions(),
        "argv": sys.argv,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 3),
        "metrics": metrics,
        "figures": figures,
    }
    write_json_atomic(out / "metrics.json", record)
    return record


def load_record(study_name: str, out_root: Path = DEFAULT_RESULTS) -> dict:
    """Read a stored study record, with a clear error when the study has not been run."""
    path = Path(out_root) / study_name / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no stored results for study {study_name!r} at {path}; "
            f"run: scratchformer run {study_name}"
        )
    return json.loads(path.read_text())


def ensure_record(
    study_name: str, out_root: Path = DEFAULT_RESULTS, profile: str = "quick"
) -> dict:
    """The stored record of ``study_name``; runs the study first when none is stored.

    Notebooks call this so that they read stored results when present and still execute on a
    fresh clone (where the quick profile is run once and stored).
    """
    from scratchformer.experiments.registry import get

    try:
        return load_record(study_name, out_root)
    except FileNotFoundError:
        study = get(study_name)
        return run_study(study, study.config(profile), out_root, profile)
