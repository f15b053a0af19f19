"""The study registry: every experiment is a named (Config dataclass, run function) pair.

`CATALOG` declares each study (name -> module, one-line description) without importing it, so
``scratchformer list`` and argument errors answer before torch loads. A study module declares a
``@dataclass Config`` (a `StudyConfig` from the kit, checked when built) whose defaults are the
quick profile, and a ``run(cfg, out) -> dict`` that writes its figures under ``out`` and returns
its metrics. ``@register(name, Config, full={...})`` records it when the module is imported;
``full`` overrides give the full profile.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("quick", "full")

_PKG = "scratchformer.experiments"
CATALOG: dict[str, tuple[str, str]] = {
    "attention.sdpa_match": (
        "attention",
        "Our attention (derived backward) vs torch SDPA: outputs, gradients, float32 error."),
    "code.finetune": (
        "code_finetune",
        "GPT on Python source: English-pretrained vs scratch vs LoRA, in bits/byte vs lzma and "
        "n-gram."),
    "feedforward.gradient_flow": (
        "feedforward",
        "GELU vs ReLU in deep FFN stacks: per-layer gradient norms, dead units, training."),
    "gpt.arithmetic": (
        "gpt_arithmetic",
        "Train a GPT on held-out arithmetic: answer perplexity, exact match, QKᵀ ranks, "
        "attention."),
    "gpt.hf_baseline": (
        "hf_baseline",
        "Our GPT (scratch and sdpa attention) vs Hugging Face GPT-2, same data and trainer."),
    "lowrank.approximation": (
        "lowrank",
        "Truncated SVD vs Nyström vs Linformer on a trained char GPT's attention maps."),
    "molecules.moleculenet": (
        "molecules",
        "Graph transformer on ESOL, FreeSolv, Lipophilicity: ablations, RF and MPNN baselines."),
    "moe.shakespeare": (
        "moe",
        "Dense vs MoE (top-1, top-2) vs DeepSeekMoE at equal active parameters; load balance."),
    "nli.snli": (
        "nli",
        "NLI on SNLI: cross-sentence attention, pair encoder and GPT classifiers vs four "
        "baselines."),
    "nli.pretraining": (
        "nli",
        "NLI on SNLI: cross-sentence attention with and without masked-word pretraining."),
    "norm.geometry": (
        "norm_geometry",
        "LayerNorm in 3-d: points, their projection on x+y+z=0, outputs on the circle of "
        "radius √3."),
    "norm.placement": (
        "norm_placement",
        "Pre-LN vs Post-LN: gradient norms per layer at init, divergence with/without warmup."),
    "positional.ablation": (
        "positional_ablation",
        "Train an encoder with sinusoidal, learned and no positional encoding on an order task."),
    "positional.encoding": (
        "positional",
        "Sinusoidal positions: rotation identity, Toeplitz Gram matrix, effective rank."),
    "shakespeare.char_vs_bpe": (
        "char_vs_bpe",
        "Char vs BPE GPT on Tiny Shakespeare at the same budget, in bits/char; nanoGPT "
        "baseline."),
    "shakespeare.embedding_pca": (
        "embedding_pca",
        "PCA (our SVD-based one) of the char model's token embedding: scatter, variance curve."),
    "sparse.quality": (
        "sparse_attention",
        "Dense vs block-sparse attention in a char GPT at the same budget: loss and tokens/s."),
    "timeseries.ett": (
        "timeseries",
        "Time series as a language on ETT: tokenized GPT vs PatchTST, DLinear and baselines."),
}
"""Every study: name -> (module under scratchformer.experiments, one-line description)."""


class StudyError(ValueError):
    """A user-facing error about a study name, profile or config override (CLI exit code 2)."""


RunFn = Callable[[Any, Path], dict]


@dataclass(frozen=True)
class Study:
    """One registered experiment: its config class, run function and profile overrides."""

    name: str
    config_cls: type
    run: RunFn
    description: str
    full: dict[str, Any] = field(default_factory=dict)

    def config(self, profile: str = "quick", overrides: dict[str, str] | None = None) -> Any:
        """Build the config for ``profile`` with string ``overrides`` parsed to field types."""
        if profile not in PROFILES:
            raise StudyError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        try:
            return self._build(profile, overrides)
        except StudyError:
            raise
        except (ValueError, TypeError) as e:
            raise StudyError(f"study {self.name!r}: {e}") from None

    def _build(self, profile: str, overrides: dict[str, str] | None) -> Any:
        """The config, its values checked by the dataclass as it is built."""
        cfg = self.config_cls()
        if profile == "full":
            cfg = dataclasses.replace(cfg, **self.full)
        if overrides:
            fields = {f.name: f for f in dataclasses.fields(self.config_cls)}
            hints = typing.get_type_hints(self.config_cls)
            parsed = {}
            for key, raw in overrides.items():
                if key not in fields:
                    known = ", ".join(sorted(fields))
                    raise StudyError(
                        f"study {self.name!r} has no setting {key!r}; known settings: {known}"
                    )
                parsed[key] = parse_value(raw, hints[key], key)
            cfg = dataclasses.replace(cfg, **parsed)
        return cfg


_REGISTRY: dict[str, Study] = {}


def register(name: str, config_cls: type, *, full: dict[str, Any] | None = None) -> Callable:
    """Decorator registering ``run`` as study ``name`` with ``config_cls`` (quick defaults)."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls for {name!r} must be a dataclass, got {config_cls!r}")
    full = dict(full or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(full) - known
    if unknown:
        raise TypeError(f"full profile of {name!r} sets unknown fields {sorted(unknown)}")

    if name not in CATALOG:
        raise ValueError(f"study {name!r} is not declared in registry.CATALOG")

    def deco(fn: RunFn) -> RunFn:
        if name in _REGISTRY:
            raise ValueError(f"study {name!r} registered twice")
        _REGISTRY[name] = Study(name, config_cls, fn, CATALOG[name][1], full)
        return fn

    return deco


def descriptions() -> dict[str, str]:
    """Every study's one-line description by name, without importing any study module."""
    return {name: desc for name, (_, desc) in sorted(CATALOG.items())}


def get(name: str) -> Study:
    """The study called ``name`` (its module imported on first use), or a StudyError."""
    if name not in CATALOG:
        raise StudyError(f"unknown study {name!r}; run 'scratchformer list' to see the studies")
    if name not in _REGISTRY:
        importlib.import_module(f"{_PKG}.{CATALOG[name][0]}")
    if name not in _REGISTRY:
        raise RuntimeError(f"module {_PKG}.{CATALOG[name][0]} does not register {name!r}")
    return _REGISTRY[name]


def studies() -> dict[str, Study]:
    """All studies by name (importing every study module)."""
    return {name: get(name) for name in sorted(CATALOG)}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(raw: str, tp: Any, key: str = "value") -> Any:
    """Parse the command-line string ``raw`` into type ``tp`` (bool, int, float, str, tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in {"none", "null"} and len(args) < len(typing.get_args(tp)):
            return None
        errors = []
        for a in args:
            try:
                return parse_value(raw, a, key)
            except StudyError as e:
                errors.append(str(e))
        raise StudyError(f"bad value for {key!r}: {raw!r} (expected {tp})")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        elem = args[0] if args else str
        parts = [p for p in raw.replace(" ", "").split(",") if p != ""]
        vals = [parse_value(p, elem, key) for p in parts]
        return tuple(vals) if origin is tuple else vals
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise StudyError(f"bad value for {key!r}: {raw!r} (expected one of {choices})")
        return raw
    if tp is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise StudyError(f"bad value for {key!r}: {raw!r} (expected true/false)")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise StudyError(f"bad value for {key!r}: {raw!r} (expected an integer)") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise StudyError(f"bad value for {key!r}: {raw!r} (expected a number)") from None
    if tp is str:
        return raw
    raise StudyError(f"setting {key!r} of type {tp} cannot be set from the command line")
