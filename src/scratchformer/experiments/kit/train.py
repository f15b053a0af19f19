"""One train/evaluate pair for every study that trains a model.

`train` wraps the library `Trainer` (the only training loop) and returns what studies report:
the log, the validation curve, the median step time and throughput. A study supplies its
batches, and optionally its loss, evaluation and hooks; the defaults are those of a next-token
model called as ``model(x, y) -> (logits, loss)``. Model-agnostic: a classifier, a forecaster
or a graph model passes its own ``loss_fn`` and ``eval_fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.data.lm_text import random_batch
from scratchformer.training import TrainConfig, Trainer
from scratchformer.training.lm_metrics import estimate_loss
from scratchformer.training.metrics_log import LOG_FIELDS
from scratchformer.training.trainer import BatchFn, EvalHook, LossFn, StepHook

__all__ = ["TrainResult", "lm_batches", "lm_eval", "lm_loss", "train", "train_config"]


def train_config(cfg: Any, seed: int | None = None, **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of a kit config: its steps, AdamW schedule, evaluation and device.

    Reads ``steps, lr, min_lr, warmup_steps, weight_decay, beta2, eval_every, device`` where
    ``cfg`` has them; gradient clipping at 1, no autocast. ``overrides`` replace any field.
    """
    eval_every = getattr(cfg, "eval_every", 0)
    fields: dict[str, Any] = dict(
        max_steps=cfg.steps, lr=getattr(cfg, "lr", None), min_lr=getattr(cfg, "min_lr", None),
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        betas=(0.9, getattr(cfg, "beta2", 0.95)), grad_clip=1.0, eval_interval=eval_every,
        log_interval=min(10, eval_every) if eval_every else 10,
        seed=cfg.seed if seed is None else seed, device=getattr(cfg, "device", "auto"),
        autocast="off",
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def lm_batches(ids: Tensor, batch_size: int, context_len: int) -> BatchFn:
    """Random next-token windows of ``ids``: ``(x, y, n_tokens)`` per call."""

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        x, y = random_batch(ids, batch_size, context_len, gen)
        return x, y, y.numel()

    return batches


def lm_loss(model: nn.Module, batch: tuple) -> tuple[Tensor, int]:
    """Next-token loss of ``model(x, y) -> (logits, loss)`` and the tokens it covers."""
    x, y, n = batch
    return model(x, y)[1], n


def lm_eval(val: Tensor, n_batches: int, batch_size: int, context_len: int, seed: int
            ) -> Callable[[nn.Module], dict[str, float]]:
    """Evaluation by mean loss over the same ``n_batches`` random validation windows."""

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"val_loss": estimate_loss(model, val, n_batches, batch_size, context_len, seed)}

    return eval_fn


@dataclass
class TrainResult:
    """A trained model with its log and the figures studies report about the run."""

    model: nn.Module
    trainer: Trainer
    history: list[dict]
    curve: dict[str, list[float]] = field(default_factory=dict)  # step and each eval metric

    @property
    def timed(self) -> list[dict]:
        """Log windows without the first (which holds the warm-up), when there are enough."""
        return self.history[1:] if len(self.history) > 2 else self.history

    @property
    def ms_per_step(self) -> float:
        """Median training milliseconds per step over the timed log windows."""
        return float(np.median([r["ms_per_step"] for r in self.timed]))

    @property
    def tokens_per_s(self) -> float:
        """Median training tokens per second over the timed log windows (NaN if not counted)."""
        speeds = [r["tokens_per_s"] for r in self.timed if r.get("tokens_per_s")]
        return float(np.median(speeds)) if speeds else float("nan")

    @property
    def train_s(self) -> float:
        """Training wall time in seconds, evaluations excluded."""
        steps = [r["step"] for r in self.history]
        sizes = np.diff([0, *steps])
        return float(sum(r["ms_per_step"] * k
                         for r, k in zip(self.history, sizes, strict=True))) / 1e3

    def final(self, metric: str = "val_loss") -> float:
        """The last evaluation's ``metric`` (the trainer always evaluates the last step)."""
        return self.curve[metric][-1]


def train(
    model: nn.Module,
    tcfg: TrainConfig,
    batches: BatchFn,
    *,
    loss_fn: LossFn = lm_loss,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    on_step: Sequence[StepHook] = (),
    on_eval: Sequence[EvalHook] = (),
    log_path: Path | None = None,
    stop_on_nonfinite: bool = False,
) -> TrainResult:
    """Train ``model`` with the library `Trainer`; returns the log and evaluation curve.

    ``stop_on_nonfinite``: a non-finite loss ends the run instead of raising (the trainer has
    logged it already), for studies that measure divergence.
    """
    trainer = Trainer(model, tcfg, train_batches=batches, loss_fn=loss_fn, eval_fn=eval_fn,
                      log_path=log_path, on_step=list(on_step), on_eval=list(on_eval))
    try:
        history = trainer.fit()
    except FloatingPointError:
        if not stop_on_nonfinite:
            raise
        history = list(getattr(trainer, "history", []))
    evals = [r for r in history if any(k not in LOG_FIELDS for k in r)]
    curve: dict[str, list[float]] = {"step": [r["step"] for r in evals]}
    for r in evals:
        for k, v in r.items():
            if k not in LOG_FIELDS:
                curve.setdefault(k, []).append(v)
    model.eval()
    return TrainResult(model, trainer, history, curve)

