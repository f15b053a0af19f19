"""The study registry: every experiment is a named (Config dataclass, run function) pair.

A study module declares a ``@dataclass Config`` whose defaults are the quick profile, and a
``run(cfg, out) -> dict`` that writes its figures under ``out`` and returns its metrics.
``@register(name, Config, full={...})`` records it; ``full`` overrides give the full profile.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("quick", "full")


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

    def deco(fn: RunFn) -> RunFn:
        if name in _REGISTRY:
            raise ValueError(f"study {name!r} registered twice")
        doc = (fn.__doc__ or config_cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Study(name, config_cls, fn, doc[0] if doc else "", full)
        return fn

    return deco


def studies() -> dict[str, Study]:
    """All registered studies by name (importing the study modules on first call)."""
    from scratchformer import experiments  # noqa: F401  (imports register every study)

    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Study:
    """The study called ``name``, or a StudyError listing the known names."""
    all_studies = studies()
    if name not in all_studies:
        raise StudyError(f"unknown study {name!r}; run 'scratchformer list' to see the studies")
    return all_studies[name]


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
