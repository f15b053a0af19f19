"""Checkpoints against corrupt and forged files (hypothesis).

* Any single changed byte in any checkpoint file is a CheckpointError that names the file, and
  leaves model, optimizer and RNGs untouched.
* Forged files, resealed so that the sizes and sha256 in the manifest match (what a careless
  tool or an attacker could produce): ``state.json`` and ``manifest.json`` with any value
  swapped, dropped or renamed anywhere, and tensors of any shape or dtype in place of the saved
  ones. Loading either refuses with a CheckpointError, leaving everything untouched, or
  succeeds, and then an optimizer update runs without crashing. Never another exception type, never
  a hang, never a write anywhere.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from fuzz_helpers import changed_outside, time_limit, tree
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_checkpoint import make_trainer, reseal, same, snapshot

from scratchformer.training import CheckpointError, Trainer

FILES = ("model.safetensors", "state.safetensors", "state.json", "manifest.json")
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=8,
)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.uint8, torch.bool]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint after 3 updates (optimizer state present), written once."""
    trainer = make_trainer(max_steps=6, eval_interval=0)
    trainer.fit(stop_at=3)
    return trainer.save(tmp_path_factory.mktemp("fuzz") / "ck")


_VICTIM: list = []


def _victim() -> Trainer:
    """A trainer with other weights and optimizer state, to load into (made once, then reset
    to the same state for every example)."""
    if not _VICTIM:
        trainer = make_trainer(seed=7, max_steps=6, eval_interval=0)
        trainer.fit(stop_at=1)
        _VICTIM.extend([trainer, copy.deepcopy(trainer.model.state_dict()),
                        copy.deepcopy(trainer.optimizer.state_dict())])
    trainer, weights, opt = _VICTIM
    trainer.model.load_state_dict(weights)
    trainer.optimizer.load_state_dict(copy.deepcopy(opt))
    trainer.step = 1
    return trainer


def _load_must_refuse_or_work(folder: Path, victim: Trainer) -> str:
    """Load ``folder`` into ``victim``: a CheckpointError that changes nothing, or a load after
    which training runs. Nothing on disk may change. Returns what happened."""
    before, files = snapshot(victim.model, victim.optimizer), tree(folder.parent)
    try:
        with time_limit(20):
            victim.load(folder)
    except CheckpointError as e:
        assert same(before, snapshot(victim.model, victim.optimizer)), "changed on error"
        assert changed_outside(files, tree(folder.parent)) == []
        return str(e)
    assert changed_outside(files, tree(folder.parent)) == []
    with time_limit(20):  # the update that read out of bounds before shapes were checked
        victim.train_step(victim.step)  # forged hyperparameters may give NaN: not a crash
    return ""


@settings(SETTINGS, max_examples=100)
@given(name=st.sampled_from(FILES), where=st.floats(0, 1, exclude_max=True),
       flip=st.integers(1, 255))
@example(name="manifest.json", where=0.0, flip=1)
@example(name="model.safetensors", where=0.99999, flip=128)
@example(name="state.json", where=0.5, flip=0x20)
def test_any_single_byte_change_is_caught_and_named(original: Path, name: str, where: float,
                                                   flip: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(original, Path(tmp) / "ck"))
        data = bytearray((folder / name).read_bytes())
        data[int(where * len(data))] ^= flip
        (folder / name).write_bytes(bytes(data))
        message = _load_must_refuse_or_work(folder, _victim())
        event("refused" if message else "loaded")
        assert name in message, f"a changed byte in {name} was not reported: {message!r}"


def _mutate_json(value: object, draw: st.DrawFn) -> object:
    """A copy of the JSON ``value`` with one node replaced, dropped or renamed."""
    root = copy.deepcopy(value)
    holder: list = [root]
    parent, key = holder, 0
    while isinstance(parent[key], (dict, list)) and parent[key] and draw(st.integers(0, 9)) < 8:
        node = parent[key]
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
    action = draw(st.sampled_from(["replace", "drop", "rename"]))
    if action == "replace" or parent is holder:
        parent[key] = draw(JSON)
    elif action == "drop":
        del parent[key]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=6))] = parent.pop(key)
    else:
        parent.insert(0, parent.pop(key))
    return holder[0]


@settings(SETTINGS, max_examples=80)
@given(data=st.data(), name=st.sampled_from(["state.json", "manifest.json"]))
def test_forged_json_is_refused_or_loads_and_trains(original: Path, data: st.DataObject,
                                                    name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(original, Path(tmp) / "ck"))
        value = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(_mutate_json(value, data.draw)))
        if name == "state.json":
            reseal(folder)
        event("refused" if _load_must_refuse_or_work(folder, _victim()) else "loaded")


@settings(SETTINGS, max_examples=80)
@given(data=st.data(), name=st.sampled_from(["state.safetensors", "model.safetensors"]))
def test_forged_tensors_are_refused_or_load_and_train(original: Path, data: st.DataObject,
                                                      name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(original, Path(tmp) / "ck"))
        tensors = load_file(str(folder / name))
        key = data.draw(st.sampled_from(sorted(tensors)))
        action = data.draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if action == "drop":
            del tensors[key]
        else:
            shape = data.draw(st.lists(st.integers(0, 5), max_size=3))
            dtype = data.draw(st.sampled_from(DTYPES))
            if data.draw(st.booleans()):  # often the saved shape, to get past the shape checks
                shape = list(tensors[key].shape)
            forged = torch.zeros(shape, dtype=dtype) if dtype == torch.bool else (
                torch.randn(shape).to(dtype) * data.draw(st.sampled_from([1.0, 1e30, 0.0])))
            tensors[key if action == "replace" else key + ".x"] = forged
        save_file(tensors, str(folder / name), {"format": "pt"})
        reseal(folder)
        event("refused" if _load_must_refuse_or_work(folder, _victim()) else "loaded")
