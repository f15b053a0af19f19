"""Saved molecular property models: one graph transformer per task in one folder, as
``<task>.safetensors`` (weights) and ``<task>.json`` (config, the target's standardisation and
unit); prediction from SMILES and the read-out token's attention."""

from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import scratchformer
from scratchformer.data.molecular_graph import collate, featurise, parse_smiles
from scratchformer.data.moleculenet import TASKS
from scratchformer.models.graph_transformer import GraphTransformer, GraphTransformerConfig

__all__ = ["DEFAULT_MODEL_DIR", "MoleculePredictor", "default_model_dir", "load_predictor",
           "save_predictor"]

DEFAULT_MODEL_DIR = Path("docs/results/molecules.moleculenet/model")


def default_model_dir() -> Path:
    """The published models of the repository this package was installed from."""
    return Path(scratchformer.__file__).resolve().parents[2] / DEFAULT_MODEL_DIR


@dataclass
class MoleculePredictor:
    """A trained `GraphTransformer` and the scale of its task's target."""

    model: GraphTransformer
    task: str
    mean: float
    std: float
    info: dict

    @property
    def unit(self) -> str:
        """The unit of the predicted quantity."""
        return TASKS[self.task].unit

    def _graph(self, smiles: str):
        if parse_smiles(smiles) is None:
            raise ValueError(f"SMILES {smiles!r} could not be parsed by RDKit")
        return collate([featurise(smiles, self.model.config.max_hops)])

    @torch.no_grad()
    def predict(self, smiles: str) -> float:
        """The prediction for one molecule, in the task's unit."""
        self.model.eval()
        return float(self.model(self._graph(smiles))[0]) * self.std + self.mean

    @torch.no_grad()
    def readout_attention(self, smiles: str) -> np.ndarray:
        """The read-out token's attention to each heavy atom (last layer, mean over heads)."""
        if not self.model.config.virtual_token:
            raise ValueError("this model has no read-out token")
        self.model.eval()
        _, maps = self.model.encode(self._graph(smiles), need_weights=True)
        return maps[-1][0, :, 0, 1:].mean(0).numpy()


def _write_atomic(path: Path, write) -> None:
    """Write a file through a temporary name and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # a plain file's permissions, whatever the writer chose
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _files(path: Path, task: str) -> tuple[Path, Path]:
    """The weights and config files of ``task`` in folder ``path``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return path / f"{task}.safetensors", path / f"{task}.json"


def save_predictor(path: str | Path, model: GraphTransformer, task: str, mean: float,
                   std: float, info: dict | None = None) -> Path:
    """Save ``model`` and its target scale in folder ``path`` (<task>.safetensors, .json)."""
    path = Path(path)
    weights, config = _files(path, task)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"kind": "graph_transformer", "task": task, "target_mean": float(mean),
            "target_std": float(std), "unit": TASKS[task].unit,
            "model": model.config.to_dict(), "info": info or {}}
    _write_atomic(weights, lambda p: save_file(state, str(p)))
    _write_atomic(config, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n",
                                                        encoding="utf-8"))
    return path


def load_predictor(path: str | Path, task: str) -> MoleculePredictor:
    """The ``task`` model `save_predictor` wrote to folder ``path``; missing or bad files raise
    FileNotFoundError or ValueError naming them."""
    path = Path(path)
    weights, config = _files(path, task)
    if not config.is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"no {task} molecule model in {path} (expected {config.name} and {weights.name}); "
            "pass --checkpoint, or run: scratchformer run molecules.moleculenet --profile full")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("kind") != "graph_transformer":
            raise ValueError("kind must be 'graph_transformer'")
        if meta["task"] != task:
            raise ValueError(f"it holds a {meta['task']!r} model, not {task!r}")
        mean, std = float(meta["target_mean"]), float(meta["target_std"])
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError("target_mean/target_std must be finite with std > 0")
        model = GraphTransformer(GraphTransformerConfig.from_dict(meta["model"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            ValueError) as e:
        raise ValueError(f"{config}: bad molecule model config: {e}") from None
    try:
        model.load_state_dict(load_file(str(weights)))
    except (OSError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:300]
        raise ValueError(f"{weights}: weights do not fit the config: {msg}") from None
    return MoleculePredictor(model.eval(), task, mean, std, dict(meta.get("info", {})))
