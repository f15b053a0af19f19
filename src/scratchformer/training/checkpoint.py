"""Checkpoints: model, optimizer and RNG state in safetensors + JSON, saved all-or-nothing.

A checkpoint is a directory::

    model.safetensors   the model's state_dict (loadable on its own, e.g. for inference)
    state.safetensors   every tensor of the optimizer state ("optimizer.state.3.exp_avg") and
                        the torch RNG states ("rng.torch", "rng.cuda.0")
    state.json          step, config, caller's extras, the optimizer state's non-tensor
                        structure (tensors replaced by {"__tensor__": key}), Python/NumPy RNG
    manifest.json       format name and version, step, and the size and sha256 of every other
                        file the checkpoint wrote

Saving writes every file into a fresh hidden sibling folder (``.NAME.new-PID-TOKEN``), fsyncs
the files, the manifest (last) and the folder, then swaps it in with renames: an existing
checkpoint becomes ``.NAME.old-PID-TOKEN``, the new folder becomes ``NAME``, the old one is
deleted. A crash at any point leaves either the old or the new checkpoint complete: between the
two renames ``NAME`` is briefly missing, and readers then use the complete hidden copy, which
the next save (or `prune_checkpoints`) renames into place. Files in an existing checkpoint
folder that the checkpoint did not write (a tokenizer saved beside it) are carried over to the
new folder by hard link; they are not in the manifest. One writer per folder at a time.

`load_checkpoint` reads every file, checks its size and sha256 against the manifest, parses
and checks everything against the model, optimizer and RNGs, and only then changes them: any
problem is a `CheckpointError` that names the file, and leaves model, optimizer and RNGs as
they were.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file
from torch import nn

FORMAT = "scratchformer-checkpoint"
FORMAT_VERSION = 2  # 2: manifest entries {"bytes", "sha256"}; 1: sizes only (still read)
READABLE_VERSIONS = (1, 2)
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
META_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, STATE_FILE, META_FILE)
STEP_DIR = re.compile(r"step_(\d+)")
# Hidden siblings of an unfinished or interrupted save (the new copy, the one it replaces) and
# of a deletion (a pruned folder is renamed out of sight, then removed).
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>new|old|trash)-(?P<pid>\d+)-[0-9a-f]+")
# Temporary files of the first version of this module, which wrote inside the folder.
_OLD_TEMP = re.compile(r"\.(model\.safetensors|state\.safetensors|state\.json|manifest\.json)"
                       r"\..*\.tmp")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ST_META = {"format": "pt", "writer": FORMAT}  # "pt": what other safetensors readers expect
# Optimizer settings that choose an implementation, not the maths: the live optimizer keeps its.
_IMPLEMENTATION = frozenset({"foreach", "fused", "capturable", "differentiable"})
# Optimizer state entries that are one number; every other tensor has its parameter's shape.
_SCALAR_STATE = frozenset({"step", "mu_product", "eta", "mu"})


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


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> dict:
    """Write ``data`` to the new file ``path``, fsync it; return its manifest entry."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> dict:
    """Save ``tensors`` as safetensors at ``path``, fsync; return its manifest entry."""
    save_file(tensors, str(path), _ST_META)
    # safetensors makes the file 0600; give it the umask's mode, as every other file gets (the
    # folder was made with 0777 minus the umask).
    os.chmod(path, path.parent.stat().st_mode & 0o666)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


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


def _plain_name(name: object) -> bool:
    """Whether ``name`` is a file name inside the checkpoint folder (no path, not reserved)."""
    return (isinstance(name, str) and bool(name) and name not in (".", "..", MANIFEST_FILE)
            and "/" not in name and "\\" not in name and "\0" not in name
            and not _LEFTOVER.fullmatch(name))


def _alive(pid: int) -> bool:
    """Whether another process with id ``pid`` is running (so its leftovers are in use)."""
    if pid == os.getpid():
        return False  # this process writes one save at a time: its leftovers are stale
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _mtime_ns(path: Path) -> int:
    """Modification time of ``path``, 0 if it has just gone."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _leftovers(path: Path) -> list[tuple[str, int, Path]]:
    """``(kind, pid, folder)`` of every hidden sibling a save of ``path`` left behind, new
    copies first, then the most recent."""
    if not path.parent.is_dir():
        return []
    found = []
    for p in path.parent.iterdir():
        m = _LEFTOVER.fullmatch(p.name)
        if m and m["name"] == path.name and p.is_dir():
            found.append((m["kind"], int(m["pid"]), p))
    return sorted(found, key=lambda t: (t[0] != "new", -_mtime_ns(t[2])))


def _recovered(path: Path) -> Path | None:
    """The complete copy an interrupted swap left when ``path`` itself is missing, else None."""
    if path.exists():
        return None
    for kind, _, p in _leftovers(path):  # the new copy first: complete before the swap
        if kind != "trash" and (p / MANIFEST_FILE).is_file():
            return p
    return None


def _settle(path: Path) -> None:
    """Finish a save of ``path`` that was interrupted, and delete what dead writers left."""
    dead = [(kind, p) for kind, pid, p in _leftovers(path) if not _alive(pid)]
    if not path.exists():
        complete = [p for kind, p in dead if kind != "trash" and (p / MANIFEST_FILE).is_file()]
        if complete:
            os.rename(complete[0], path)
            dead = [(kind, p) for kind, p in dead if p != complete[0]]
    for _, p in dead:
        _remove(p)


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder, its manifest first: cut short, it is merely incomplete."""
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (same folder tree), copying where links are refused."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_over(old: Path, new: Path) -> None:
    """Link into ``new`` the entries of ``old`` that are not checkpoint files."""
    for entry in old.iterdir():
        if entry.name in (*REQUIRED_FILES, MANIFEST_FILE) or (new / entry.name).exists() or (
                _OLD_TEMP.fullmatch(entry.name)):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))


def _sibling(path: Path, kind: str) -> Path:
    """A fresh hidden sibling name of ``path`` for a save in progress."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _swap(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` at ``final``, replacing what is there, by renames."""
    if not final.exists():
        os.rename(new, final)
        _fsync_dir(final.parent)
        return
    backup = _sibling(final, "old")
    os.rename(final, backup)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(backup, final)
        raise
    _fsync_dir(final.parent)
    _remove(backup)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write model, optimizer, RNG states, ``step``, ``config`` and JSON ``extra`` to ``path``.

    ``files`` (name -> bytes) are written into the checkpoint too and covered by its manifest.
    The save is all-or-nothing (see the module docstring).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    files = dict(files or {})
    for name, data in files.items():
        if not _plain_name(name) or name in REQUIRED_FILES:
            raise ValueError(f"files: {name!r} is not a free file name inside a checkpoint")
        if not isinstance(data, bytes):
            raise TypeError(f"files[{name!r}] must be bytes, got {type(data).__name__}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot save a checkpoint at {path}: it is a file, not a folder")
    # Everything that can fail on the caller's objects fails here, before the disk is touched.
    state: dict[str, torch.Tensor] = {}
    meta = {
        "step": int(step),
        "config": json.loads(json.dumps(dict(config or {}), default=str)),
        "extra": dict(extra or {}),
        "optimizer": None if optimizer is None else _encode(
            optimizer.state_dict(), "optimizer", state),
        "rng": _capture_rng(state),
    }
    meta_bytes = json.dumps(meta, indent=1, allow_nan=True).encode("utf-8")
    model_tensors = _storable(model.state_dict())
    state = _storable(state)

    path.parent.mkdir(parents=True, exist_ok=True)
    _settle(path)
    new = _sibling(path, "new")
    new.mkdir()
    try:
        entries = {MODEL_FILE: _write_tensors(new / MODEL_FILE, model_tensors),
                   STATE_FILE: _write_tensors(new / STATE_FILE, state),
                   META_FILE: _write_bytes(new / META_FILE, meta_bytes)}
        for name, data in files.items():
            entries[name] = _write_bytes(new / name, data)
        if path.is_dir():
            _carry_over(path, new)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
                    "files": entries}
        # Compact, no trailing newline: any one changed byte changes a value or breaks the JSON.
        _write_bytes(new / MANIFEST_FILE,
                     json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode())
        _fsync_dir(new)
        _swap(new, path)
    except BaseException:
        _remove(new)
        raise
    return path


# ----------------------------------------------------------------------------- finding


def _complete_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the complete ``step_N`` checkpoints under ``root``, with the
    complete copy of an interrupted save standing in for a missing ``step_N``."""
    found: dict[str, tuple[int, Path]] = {}
    for p in root.iterdir():
        if (m := STEP_DIR.fullmatch(p.name)) and (p / MANIFEST_FILE).is_file():
            found[p.name] = (int(m.group(1)), p)
    for p in root.iterdir():
        leftover = _LEFTOVER.fullmatch(p.name)
        if leftover and (m := STEP_DIR.fullmatch(leftover["name"])) and (
                leftover["name"] not in found) and (copy := _recovered(root / leftover["name"])):
            found[leftover["name"]] = (int(m.group(1)), copy)
    return sorted(found.values())


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The complete ``step_N`` directory under ``root`` with the largest N, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = _complete_dirs(root)
    return found[-1][1] if found else None


def find_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a complete checkpoint, else its latest complete ``step_N``."""
    path = Path(path)
    try:
        if (path / MANIFEST_FILE).is_file():
            return path
        recovered = _recovered(path)
        if recovered is not None:
            return recovered
        if path.is_dir() and any((path / n).exists() for n in REQUIRED_FILES):
            raise CheckpointError(
                f"incomplete checkpoint at {path}: {MANIFEST_FILE} is missing, so its writing "
                "was interrupted; resume from an earlier checkpoint"
            )
        latest = latest_checkpoint(path)
    except OSError as e:
        raise CheckpointError(f"cannot look for a checkpoint at {path}: {e}") from e
    if latest is None:
        raise CheckpointError(f"no complete checkpoint at {path} (nor in step_N folders under it)")
    return latest


def prune_checkpoints(root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete ``step_N`` folders, and older incomplete ones;
    finish interrupted saves and remove what dead writers left."""
    if keep < 1:
        return []
    root = Path(root)
    names = {m["name"] for p in root.iterdir() if (m := _LEFTOVER.fullmatch(p.name))}
    for name in sorted(names):
        if STEP_DIR.fullmatch(name):
            _settle(root / name)
    dirs = sorted((int(m.group(1)), p) for p in root.iterdir()
                  if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)))
    complete = [s for s, p in dirs if (p / MANIFEST_FILE).is_file()]
    if len(complete) <= keep:
        return []
    oldest_kept = complete[-keep]
    removed = [p for s, p in dirs if s < oldest_kept]
    for p in removed:  # out of sight first, so that no visible step_N is ever half deleted
        trash = _sibling(p, "trash")
        os.rename(p, trash)
        _remove(trash)
    return removed


# ----------------------------------------------------------------------------- reading


def _is_int(x: object) -> bool:
    """Whether ``x`` is a JSON integer (a bool is not one, though Python says it is an int)."""
    return isinstance(x, int) and not isinstance(x, bool)


def _parse_json(file: Path, data: bytes) -> Any:
    """The JSON value in ``data`` (the bytes of ``file``), or a CheckpointError naming it."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"cannot read {file}: not UTF-8 ({e}): corrupt file?") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"cannot read {file}: {e} (not valid JSON: corrupt file?)") from e


def _read_manifest(folder: Path) -> tuple[int, dict[str, tuple[int, str | None]]]:
    """The step and ``{file: (bytes, sha256 or None)}`` recorded in the manifest, checked."""
    file = folder / MANIFEST_FILE
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {file}: {e}") from e
    manifest = _parse_json(file, data)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS or not _is_int(version):
        raise CheckpointError(f"{file}: format version {version!r}, this code reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    if set(manifest) != {"format", "format_version", "step", "files"}:
        raise CheckpointError(f"{file}: expected the keys format, format_version, step and "
                              f"files, got {sorted(manifest)}")
    step, listed = manifest["step"], manifest["files"]
    if not _is_int(step) or step < 0:
        raise CheckpointError(f"{file}: step must be an int >= 0, got {step!r}")
    if not isinstance(listed, dict):
        raise CheckpointError(f"{file}: 'files' must map file names to their size and sha256, "
                              f"got a {type(listed).__name__}")
    entries: dict[str, tuple[int, str | None]] = {}
    for name, entry in listed.items():
        if not _plain_name(name):
            raise CheckpointError(f"{file} lists {name!r}, which is not a file of the folder")
        if version == 1 and _is_int(entry) and entry >= 0:
            entries[name] = (entry, None)
        elif (version >= 2 and isinstance(entry, dict) and set(entry) == {"bytes", "sha256"}
              and _is_int(entry["bytes"]) and entry["bytes"] >= 0
              and isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])):
            entries[name] = (entry["bytes"], entry["sha256"])
        else:
            raise CheckpointError(f"{file}: the entry of {name} is malformed: {entry!r}")
    missing = [n for n in REQUIRED_FILES if n not in entries]
    if missing:
        raise CheckpointError(f"{file} does not list {', '.join(missing)}")
    return step, entries


def _read_verified(folder: Path, name: str, size: int, sha256: str | None) -> bytes:
    """The bytes of ``folder/name``, checked against the size and sha256 of the manifest."""
    file = folder / name
    try:
        with open(file, "rb") as f:
            data = f.read(size + 1)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file {file} is missing") from e
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {file}: {e}") from e
    if len(data) != size:
        actual = file.stat().st_size
        raise CheckpointError(
            f"checkpoint file {file} has {actual} bytes but {folder / MANIFEST_FILE} recorded "
            f"{size}: truncated or overwritten after the checkpoint was written"
        )
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise CheckpointError(
                f"checkpoint file {file} has sha256 {got} but {folder / MANIFEST_FILE} recorded "
                f"{sha256}: one of the two is corrupt"
            )
    return data


def _parse_tensors(file: Path, data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors bytes ``data`` of ``file``, or a CheckpointError."""
    try:
        return load_tensors(data)
    except Exception as e:  # any failure to parse foreign bytes is a corrupt file
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
    kinds = [
        f"{k}: checkpoint {tensors[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in tensors and (tensors[k].dtype.is_floating_point != v.dtype.is_floating_point
                             or tensors[k].dtype.is_complex != v.dtype.is_complex)
    ]
    if not (missing or unexpected or shapes or kinds):
        return
    lines = [f"checkpoint {file} does not fit the model ({type(model).__name__}):"]
    for title, items in (("missing from the checkpoint", missing),
                         ("unexpected (not in the model)", unexpected),
                         ("shape mismatch", shapes), ("dtype mismatch", kinds)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10
                                             else "")
            lines.append(f"  {title}: {shown}")
    raise CheckpointError("\n".join(lines))


def _same_kind(saved: Any, live: Any) -> bool:
    """Whether the saved optimizer setting ``saved`` can stand in for the live ``live``."""
    if isinstance(live, bool) or live is None:
        return type(saved) is type(live)
    if isinstance(live, (int, float)):
        return (isinstance(saved, (int, float)) and not isinstance(saved, bool)
                and math.isfinite(saved))
    if isinstance(live, (tuple, list)):
        return (isinstance(saved, (tuple, list)) and len(saved) == len(live)
                and all(_same_kind(s, v) for s, v in zip(saved, live, strict=True)))
    if isinstance(live, torch.Tensor):
        return (isinstance(saved, torch.Tensor) and saved.shape == live.shape
                and saved.dtype == live.dtype)
    return type(saved) is type(live)


def _check_state_value(key: str, value: Any, param: torch.Tensor, where: str) -> str | None:
    """What is wrong with optimizer state entry ``key`` of ``param``, or None if it fits."""
    if key in _SCALAR_STATE:
        if isinstance(value, torch.Tensor):
            if value.dim() != 0 or value.dtype.is_complex or value.dtype == torch.bool:
                return (f"{where} must be a real scalar tensor, got {value.dtype} "
                        f"{tuple(value.shape)}")
            return None if bool(torch.isfinite(value)) else f"{where} is not finite"
        ok = _is_int(value) or (isinstance(value, float) and math.isfinite(value))
        return None if ok else f"{where} must be a finite number, got {value!r}"
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        return f"{where} must be a tensor, got {type(value).__name__}"
    if value.shape != param.shape or value.dtype != param.dtype:
        return (f"{where} is {value.dtype} {tuple(value.shape)} but its parameter is "
                f"{param.dtype} {tuple(param.shape)}")
    if value.device.type != "cpu" and value.device != param.device:
        return f"{where} is on {value.device}, its parameter on {param.device}"
    return None


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, file: Path) -> dict:
    """The saved optimizer state, checked against ``optimizer`` tensor by tensor and ready for
    ``load_state_dict``: a wrong shape there would make the update read out of bounds."""

    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"{file}: optimizer state {message}")

    if not isinstance(saved, dict) or not {"state", "param_groups"} <= set(saved):
        raise fail("must be a mapping with 'state' and 'param_groups'")
    groups, saved_groups, state = optimizer.param_groups, saved["param_groups"], saved["state"]
    if not isinstance(saved_groups, list) or not all(isinstance(g, dict) for g in saved_groups):
        raise CheckpointError(f"{file}: optimizer state has no valid param_groups")
    saved_sizes = [len(g["params"]) if isinstance(g.get("params"), list) else None
                   for g in saved_groups]
    sizes = [len(g["params"]) for g in groups]
    if saved_sizes != sizes:
        raise CheckpointError(
            f"{file}: optimizer parameter groups have sizes {saved_sizes} in the checkpoint but "
            f"{sizes} in the optimizer (a different model or weight-decay split?)"
        )
    param_of: dict[int, tuple[torch.Tensor, dict]] = {}
    new_groups = []
    for i, (live, group) in enumerate(zip(groups, saved_groups, strict=True)):
        new: dict[str, Any] = {}
        for pid, p in zip(group["params"], live["params"], strict=True):
            if not _is_int(pid) or pid in param_of:
                raise fail(f"group {i} lists the parameter id {pid!r} (not a new int)")
            param_of[pid] = (p, new)
        for key, value in live.items():
            if key == "params":
                new[key] = list(group["params"])
            elif key in _IMPLEMENTATION or key not in group:
                new[key] = value
            elif _same_kind(group[key], value):
                new[key] = group[key]
            else:
                raise fail(f"group {i} has {key}={group[key]!r}, not like the optimizer's "
                           f"{value!r}")
        new_groups.append(new)
    if not isinstance(state, dict):
        raise fail("'state' must be a mapping of parameter ids")
    adam = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
    for pid, entry in state.items():
        if not _is_int(pid) or pid not in param_of:
            raise fail(f"has an entry for {pid!r}, which is not a parameter id of any group")
        param, group = param_of[pid]
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            raise fail(f"of parameter {pid} must be a mapping of names")
        if adam:
            want = {"step", "exp_avg", "exp_avg_sq"} | (
                {"max_exp_avg_sq"} if group.get("amsgrad") else set())
            if set(entry) != want:
                raise fail(f"of parameter {pid} has {sorted(entry)}, {type(optimizer).__name__} "
                           f"needs {sorted(want)}")
        for key, value in entry.items():
            problem = _check_state_value(key, value, param, f"state[{pid}][{key!r}]")
            if problem is None and adam and not isinstance(value, torch.Tensor):
                problem = f"state[{pid}][{key!r}] must be a tensor, got {value!r}"
            if problem is not None:
                raise fail(problem)
    return {"state": state, "param_groups": new_groups}


def _check_rng(rng: Any, tensors: Mapping[str, torch.Tensor], file: Path) -> Callable[[], None]:
    """Check the saved RNG states on throwaway generators; return what installs them."""
    try:
        if not isinstance(rng, dict) or not {"python", "numpy"} <= set(rng):
            raise ValueError("'rng' must hold 'python' and 'numpy' states")
        version, words, gauss = rng["python"]
        if not isinstance(words, list) or not all(_is_int(w) for w in words):
            raise ValueError("the Python state must be a list of ints")
        if gauss is not None and not isinstance(gauss, float):
            raise ValueError(f"the Python state's cached gauss must be a float or null, got "
                             f"{gauss!r}")
        python_state = (version, tuple(words), gauss)
        random.Random().setstate(python_state)
        name, keys, pos, has_gauss, cached = rng["numpy"]
        if not (isinstance(keys, list) and len(keys) == 624
                and all(_is_int(k) and 0 <= k < 2**32 for k in keys)):
            raise ValueError("the NumPy state must hold 624 32-bit unsigned ints")
        numpy_state = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        np.random.RandomState().set_state(numpy_state)
        torch_state = tensors["rng.torch"]
        cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")),
                           key=lambda k: int(k.rsplit(".", 1)[1]))
        if cuda_keys != [f"rng.cuda.{i}" for i in range(len(cuda_keys))]:
            raise ValueError(f"CUDA RNG states {cuda_keys} are not numbered 0, 1, ...")
        cuda = [tensors[k] for k in cuda_keys]
        for t in [torch_state, *cuda]:
            if t.dtype != torch.uint8 or t.dim() != 1:
                raise ValueError(f"an RNG state must be a 1-d uint8 tensor, got {t.dtype} "
                                 f"{tuple(t.shape)}")
        torch.Generator().set_state(torch_state)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(f"{file}: cannot restore the RNG states: {e}") from e

    def install() -> None:
        torch.set_rng_state(torch_state)
        if cuda:
            if torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda):
                torch.cuda.set_rng_state_all(cuda)
            else:
                warnings.warn("checkpoint holds CUDA RNG states but CUDA is unavailable here; "
                              "GPU random numbers will differ from the original run",
                              stacklevel=4)
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    return install


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
    check: Callable[[CheckpointInfo], None] | None = None,
) -> CheckpointInfo:
    """Check, then load a checkpoint (or the latest under ``path``) into model/optimizer/RNGs.

    ``check(info)`` runs after every check and before anything is changed; a ValueError or
    TypeError it raises becomes a CheckpointError, so callers can refuse extras they cannot use.
    """
    path = find_checkpoint(path)
    step, entries = _read_manifest(path)
    contents = {name: _read_verified(path, name, size, sha) for name, (size, sha)
                in entries.items()}

    weights = _parse_tensors(path / MODEL_FILE, contents[MODEL_FILE])
    _check_fits(model, weights, path / MODEL_FILE)
    meta_file = path / META_FILE
    meta = _parse_json(meta_file, contents[META_FILE])
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file} must hold a JSON object, got {type(meta).__name__}")
    for key, kind in (("step", int), ("config", dict), ("extra", dict)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CheckpointError(f"{meta_file} lacks or garbles entry {key!r}")
    if meta["step"] != step:
        raise CheckpointError(f"{meta_file} is at step {meta['step']} but {MANIFEST_FILE} says "
                              f"{step}: the two are from different checkpoints")
    state = _parse_tensors(path / STATE_FILE, contents[STATE_FILE])
    install_rng = _check_rng(meta.get("rng"), state, meta_file) if restore_rng else None
    opt_state = None
    if optimizer is not None:
        if meta.get("optimizer") is None:
            raise CheckpointError(f"{path} was saved without optimizer state")
        try:
            decoded = _decode(meta["optimizer"], state)
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{meta_file}: optimizer state garbled ({e!r})") from e
        opt_state = _check_optimizer(optimizer, decoded, meta_file)
    info = CheckpointInfo(path, step, meta["config"], meta["extra"])
    if check is not None:
        try:
            check(info)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{meta_file}: {e}") from e

    # Everything is read and checked: apply. The optimizer first, since it can be put back.
    if optimizer is not None:
        before = optimizer.state_dict()
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit: {e}") from e
    try:
        model.load_state_dict(weights)
    except BaseException:
        if optimizer is not None:
            optimizer.load_state_dict(before)
        raise
    if install_rng is not None:
        install_rng()
    return info
