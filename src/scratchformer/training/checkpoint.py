"""Checkpoints: model, optimizer and RNG state in safetensors + JSON, written atomically.

A checkpoint is a directory::

    model.safetensors   the model's state_dict (loadable on its own, e.g. for inference)
    state.safetensors   every tensor of the optimizer state ("optimizer.state.3.exp_avg") and
                        the torch RNG states ("rng.torch", "rng.cuda.0")
    state.json          step, config, caller's extras, the optimizer state's non-tensor
                        structure (tensors replaced by {"__tensor__": key}), Python/NumPy RNG
    manifest.json       format name and version, step, and each file's size in bytes

Each file is written to a temporary name in the same directory and moved into place with
``os.replace`` (atomic on POSIX). ``manifest.json`` is removed first and written last, so a
directory without it is a checkpoint whose writing was interrupted, and a file whose size
differs from the manifest was truncated or overwritten later. `load_checkpoint` reads and checks
everything before it changes the model, and reports every problem as a `CheckpointError` that
names the file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "scratchformer-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
META_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
STEP_DIR = re.compile(r"step_(\d+)")
_ST_META = {"format": "pt", "writer": FORMAT}  # "pt": what other safetensors readers expect


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt, or does not fit the model/optimizer."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What `load_checkpoint` read besides the tensors it loaded into the model/optimizer."""

    path: Path
    step: int
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def step_dir(root: str | os.PathLike, step: int) -> Path:
    """The directory the trainer uses for the checkpoint after ``step`` updates."""
    return Path(root) / f"step_{step:07d}"


# ----------------------------------------------------------------------------- writing


def _atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then fsync and ``os.replace`` it onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, payload: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=1)

    _atomic(path, write)


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, storage-disjoint copies/views (safetensors refuses shared memory)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:  # tied weights: store the alias as its own copy
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``obj`` with each tensor moved into ``tensors`` under a dotted key."""
    if isinstance(obj, torch.Tensor):
        if key in tensors:
            raise ValueError(f"two entries of the state map to the same key {key!r}")
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        items = [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in obj.items()]
        if all(isinstance(k, str) for k in obj):
            return dict(items)
        return {"__items__": items}  # JSON objects only have string keys; keep ints as ints
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of `_encode`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _capture_rng(tensors: dict[str, torch.Tensor]) -> dict:
    """Put torch RNG states into ``tensors``; return Python's and NumPy's as JSON."""
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(words), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng(rng: dict, tensors: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn("checkpoint holds CUDA RNG states but CUDA is unavailable here; "
                          "GPU random numbers will differ from the original run", stacklevel=3)
    version, words, gauss = rng["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write model, optimizer, RNG states, ``step``, ``config`` and JSON ``extra`` to ``path``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST_FILE).unlink(missing_ok=True)  # from here until the end: incomplete
    state: dict[str, torch.Tensor] = {}
    meta = {
        "step": int(step),
        "config": json.loads(json.dumps(dict(config or {}), default=str)),
        "extra": dict(extra or {}),
        "optimizer": None if optimizer is None else _encode(
            optimizer.state_dict(), "optimizer", state),
        "rng": _capture_rng(state),
    }
    model_tensors = _storable(model.state_dict())
    _atomic(path / MODEL_FILE, lambda tmp: save_file(model_tensors, tmp, _ST_META))
    state = _storable(state)
    _atomic(path / STATE_FILE, lambda tmp: save_file(state, tmp, _ST_META))
    _write_json(path / META_FILE, meta)
    sizes = {n: (path / n).stat().st_size for n in (MODEL_FILE, STATE_FILE, META_FILE)}
    _write_json(path / MANIFEST_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                      "step": int(step), "files": sizes})
    return path


# ----------------------------------------------------------------------------- finding


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The complete ``step_N`` directory under ``root`` with the largest N, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := STEP_DIR.fullmatch(p.name)) and (p / MANIFEST_FILE).is_file()
    ]
    return max(found)[1] if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a complete checkpoint, else its latest complete ``step_N``."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    if (path / MODEL_FILE).exists() or (path / META_FILE).exists():
        raise CheckpointError(
            f"incomplete checkpoint at {path}: {MANIFEST_FILE} is missing, so its writing was "
            "interrupted; resume from an earlier checkpoint"
        )
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"no complete checkpoint at {path} (nor in step_N folders under it)")
    return latest


def prune_checkpoints(root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete ``step_N`` folders, and older incomplete ones."""
    if keep < 1:
        return []
    root = Path(root)
    dirs = sorted((int(m.group(1)), p) for p in root.iterdir()
                  if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)))
    complete = [s for s, p in dirs if (p / MANIFEST_FILE).is_file()]
    if len(complete) <= keep:
        return []
    oldest_kept = complete[-keep]
    removed = [p for s, p in dirs if s < oldest_kept]
    for p in removed:
        shutil.rmtree(p)
    return removed


# ----------------------------------------------------------------------------- reading


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {file}: {e} (not valid JSON: corrupt file?)") from e


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {file}: {e} (corrupt or truncated file?)") from e


def _check_fits(model: nn.Module, tensors: Mapping[str, torch.Tensor], file: Path) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"checkpoint {file} does not fit the model ({type(model).__name__}):"]
    for title, items in (("missing from the checkpoint", missing),
                         ("unexpected (not in the model)", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10
                                             else "")
            lines.append(f"  {title}: {shown}")
    raise CheckpointError("\n".join(lines))


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, file: Path) -> None:
    groups = optimizer.param_groups
    try:
        saved_sizes = [len(g["params"]) for g in saved["param_groups"]]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{file}: optimizer state has no valid param_groups ({e})") from e
    sizes = [len(g["params"]) for g in groups]
    if saved_sizes != sizes:
        raise CheckpointError(
            f"{file}: optimizer parameter groups have sizes {saved_sizes} in the checkpoint but "
            f"{sizes} in the optimizer (a different model or weight-decay split?)"
        )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> CheckpointInfo:
    """Check, then load a checkpoint (or the latest under ``path``) into model/optimizer/RNGs."""
    path = find_checkpoint(path)
    manifest = _read_json(path / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path / MANIFEST_FILE} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / MANIFEST_FILE}: format version {manifest.get('format_version')!r}, this "
            f"code reads version {FORMAT_VERSION}"
        )
    for name, size in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint file {file} has {file.stat().st_size} bytes but the manifest "
                f"recorded {size}: truncated or overwritten after the checkpoint was written"
            )

    weights = _read_tensors(path / MODEL_FILE)
    _check_fits(model, weights, path / MODEL_FILE)
    meta = _read_json(path / META_FILE)
    state = _read_tensors(path / STATE_FILE)
    try:
        step, saved_opt, rng = int(meta["step"]), meta["optimizer"], meta["rng"]
        opt_state = None if saved_opt is None else _decode(saved_opt, state)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META_FILE} lacks or garbles entry {e}") from e
    if optimizer is not None:
        if opt_state is None:
            raise CheckpointError(f"{path} was saved without optimizer state")
        _check_optimizer(optimizer, opt_state, path / META_FILE)

    model.load_state_dict(weights)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit: {e}") from e
    if restore_rng:
        try:
            _restore_rng(rng, state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: cannot restore the RNG states: {e}") from e
    return CheckpointInfo(path, step, meta.get("config", {}), meta.get("extra", {}))
