"""Study configs checked once, when they are built.

Every study config is a dataclass that subclasses `StudyConfig`. Its ``__post_init__`` runs the
checks of every field, so a bad value fails where the config is made (``Study.config`` turns
that into a one-line `StudyError`), never minutes into a run. A field is checked by the rule
its class (or a base) names in ``RULES``; a field without a rule gets the rule of its type: an
int must be >= 0, a float finite, a bool a bool, a str a str, a tuple is checked element by
element. Cross-field checks go in ``check()``.

Shared fields are declared once, in the bases below; a study subclasses the closest base, adds
its own fields and redeclares only the defaults it changes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from scratchformer.validation import check_bool, check_choice, check_int, check_real

__all__ = [
    "ATTENTION_CHOICES",
    "CharGPTConfig",
    "CharTextConfig",
    "Rule",
    "StudyConfig",
    "TrainingConfig",
    "at_least",
    "check_config",
    "choice",
    "in_range",
    "positive",
    "positive_real",
    "unit_real",
]

Rule = Callable[[str, Any], None]


def at_least(low: int) -> Rule:
    """An int >= ``low``."""
    return lambda name, value: check_int(name, value, low) and None


positive: Rule = at_least(1)


def positive_real(name: str, value: Any) -> None:
    """A finite float > 0."""
    check_real(name, value, minimum=0.0, min_inclusive=False)


def unit_real(name: str, value: Any) -> None:
    """A float in [0, 1]."""
    check_real(name, value, minimum=0.0, maximum=1.0)


def in_range(low: float, high: float, *, high_inclusive: bool = True) -> Rule:
    """A finite float in [low, high] (or [low, high))."""
    return lambda name, value: check_real(
        name, value, minimum=low, maximum=high, max_inclusive=high_inclusive) and None


def choice(*choices: str) -> Rule:
    """One of the strings ``choices``."""
    return lambda name, value: check_choice(name, value, choices) and None


def each(rule: Rule) -> Rule:
    """A tuple or list whose every element passes ``rule`` (named ``field[i]`` in errors)."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must be a sequence, got {type(value).__name__}")
        for i, v in enumerate(value):
            rule(f"{name}[{i}]", v)

    return check


def _any(name: str, value: Any) -> None:
    """No check (the field's rule says anything goes)."""


def _by_type(tp: Any) -> Rule:
    """The default rule for a field annotated ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _by_type(args[0]) if len(args) == 1 else _any
        return lambda name, value: None if value is None else inner(name, value)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return each(_by_type(args[0]) if args else _any)
    if origin is typing.Literal:
        return choice(*typing.get_args(tp))
    if tp is bool:
        return lambda name, value: check_bool(name, value) and None
    if tp is int:
        return at_least(0)
    if tp is float:
        return lambda name, value: check_real(name, value) and None
    if tp is str:
        def text(name: str, value: Any) -> None:
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
        return text
    return _any


def check_config(cfg: Any) -> None:
    """Run the rule of every field of the dataclass ``cfg``, then its ``check()``."""
    rules: dict[str, Rule] = {}
    for cls in reversed(type(cfg).__mro__):
        rules.update(getattr(cls, "RULES", {}) if "RULES" in vars(cls) else {})
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        rule = rules.get(f.name) or _by_type(hints[f.name])
        rule(f.name, getattr(cfg, f.name))
    cfg.check()


@dataclass
class StudyConfig:
    """What every study has: a seed. Values are checked when the config is built."""

    seed: int = 0

    RULES: ClassVar[dict[str, Rule]] = {"seed": _any}

    def __post_init__(self) -> None:
        check_config(self)

    def check(self) -> None:
        """Checks that involve several fields; a study overrides it (and calls super)."""


@dataclass
class TrainingConfig(StudyConfig):
    """What every study that trains a transformer has: width, heads, batch, decay, threads."""

    d_model: int = 64
    n_heads: int = 2
    batch_size: int = 12
    weight_decay: float = 0.1
    threads: int = 1  # torch threads while the study runs; 0 = leave torch's setting

    RULES: ClassVar[dict[str, Rule]] = {"d_model": positive, "n_heads": positive,
                                        "batch_size": positive}

    def check(self) -> None:
        super().check()
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by "
                             f"n_heads={self.n_heads}")


@dataclass
class CharTextConfig(TrainingConfig):
    """A model trained on Tiny Shakespeare characters, in random windows of ``context_len``."""

    text_chars: int = 200_000  # first characters of the corpus used; 0 = all of it
    val_chars: int = 20_000  # validation characters kept; 0 = all
    context_len: int = 64
    steps: int = 100
    warmup_steps: int = 10
    eval_batches: int = 20  # random validation batches per loss estimate (nanoGPT-style)

    RULES: ClassVar[dict[str, Rule]] = {"context_len": positive, "steps": positive,
                                        "eval_batches": positive}

    def check(self) -> None:
        super().check()
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be < steps={self.steps}, "
                             f"got {self.warmup_steps}")


ATTENTION_CHOICES = ("scratch", "sdpa")


@dataclass
class CharGPTConfig(CharTextConfig):
    """A char GPT trained by the kit: depth, AdamW schedule, evaluation and kernel."""

    n_layers: int = 2
    lr: float = 1e-3
    min_lr: float = 1e-4
    beta2: float = 0.99
    eval_every: int = 50
    attention_backend: str = "sdpa"  # the dense kernel: "sdpa" (PyTorch's) or "scratch"
    device: str = "auto"

    RULES: ClassVar[dict[str, Rule]] = {
        "n_layers": positive, "lr": positive_real, "min_lr": positive_real,
        "beta2": in_range(0.0, 1.0, high_inclusive=False), "eval_every": positive,
        "attention_backend": choice(*ATTENTION_CHOICES),
    }

    def check(self) -> None:
        super().check()
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr={self.lr}, got {self.min_lr}")
        if not math.isfinite(self.lr):
            raise ValueError(f"lr must be finite, got {self.lr}")
