"""Studies of a GPT learning arithmetic: their config, task, model and one training run.

`ArithmeticLMConfig` holds the task, model, training and evaluation fields that such studies
share, checked when built. `train_arithmetic_lm` trains any next-token model (through its
`LMAdapter`) with the kit's `train` on the task's training rows, evaluating on the validation
split before the first update and every ``eval_every`` updates after it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from scratchformer.analysis.arithmetic_eval import evaluate_split
from scratchformer.analysis.tracking import SpectrumTracker
from scratchformer.data.arithmetic import (
    LOSS_ON,
    ArithmeticConfig,
    ArithmeticTask,
    TaskBatches,
    build_task,
    max_problem_length,
)
from scratchformer.experiments.kit.config import (
    ATTENTION_CHOICES,
    Rule,
    TrainingConfig,
    choice,
    positive,
    positive_real,
)
from scratchformer.experiments.kit.train import TrainResult, train, train_config
from scratchformer.models.gpt import GPT, GPT_POSITIONALS, GPTConfig
from scratchformer.models.lm_adapter import GPT_ADAPTER, LMAdapter, LossFn, gpt_loss
from scratchformer.training.trainer import EvalHook, resolve_autocast, resolve_device

__all__ = [
    "ANSWER_PPL_TARGET",
    "FULL_TASK",
    "ArithmeticLMConfig",
    "ArithmeticRun",
    "arithmetic_config",
    "arithmetic_gpt",
    "arithmetic_task",
    "report_eval",
    "train_arithmetic_lm",
]

FULL_TASK = {"max_digits": 3, "operators": ("+", "-"), "n_train": 300_000, "n_val": 1000,
             "n_test": 5000, "n_layers": 4, "n_heads": 4, "d_model": 64, "batch_size": 128,
             "lr": 3e-3, "warmup_steps": 200, "eval_every": 1000, "threads": 2}
"""The full profile's task, model and schedule, shared by the arithmetic studies."""

ANSWER_PPL_TARGET = 1.5
"""Validation/test answer perplexity below which a model counts as having learned the task."""

AUTOCAST_CHOICES = ("off", "bf16")


@dataclass
class ArithmeticLMConfig(TrainingConfig):
    """Quick profile: 1-2 digit addition, a 2-layer width-64 GPT, a few hundred steps."""

    # task
    max_digits: int = 2
    operators: tuple[str, ...] = ("+",)
    n_train: int | None = None  # None: every training problem (small spaces only)
    n_val: int = 300
    n_test: int = 500
    data_seed: int = 0  # fixes the split and the samples, whatever the training seed
    # model
    n_layers: int = 2
    n_heads: int = 4
    context_len: int = 0  # 0: the longest problem of the task
    positional: str = "learned"  # "learned" (GPT-2) or "sinusoidal"
    attention_backend: str = "sdpa"
    # training
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    loss_on: str = "all"  # "all" tokens (a plain LM) or only the "answer" tokens
    autocast: str = "off"  # "off" or "bf16"
    # evaluation and analysis
    eval_every: int = 50
    n_eval_generate: int = 200  # validation problems decoded at each evaluation
    device: str = "auto"

    RULES: ClassVar[dict[str, Rule]] = {
        "max_digits": positive, "n_val": positive, "n_test": positive, "n_layers": positive,
        "positional": choice(*GPT_POSITIONALS), "attention_backend": choice(*ATTENTION_CHOICES),
        "steps": positive, "lr": positive_real, "grad_clip": positive_real,
        "loss_on": choice(*LOSS_ON), "autocast": choice(*AUTOCAST_CHOICES),
        "eval_every": positive, "n_eval_generate": positive,
    }

    def check(self) -> None:
        super().check()
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be < steps={self.steps}, "
                             f"got {self.warmup_steps}")
        longest = max_problem_length(arithmetic_config(self))
        if 0 < self.context_len < longest:
            raise ValueError(f"context_len must be 0 (fit the task) or >= {longest}, the "
                             f"longest problem of this task, got {self.context_len}")


def arithmetic_config(cfg: Any) -> ArithmeticConfig:
    """The `ArithmeticConfig` (which problems, how many per split) of a study config."""
    return ArithmeticConfig(max_digits=cfg.max_digits, operators=tuple(cfg.operators),
                            n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test)


def arithmetic_task(cfg: Any) -> ArithmeticTask:
    """The encoded splits of a study config, drawn with its ``data_seed``."""
    return build_task(arithmetic_config(cfg), seed=cfg.data_seed, context_len=cfg.context_len,
                      loss_on=cfg.loss_on)


def arithmetic_gpt(cfg: Any, task: ArithmeticTask, backend: str | None = None) -> GPT:
    """Our GPT of the config's shape for ``task`` (GPT-2 defaults otherwise: biases, dropout
    0); ``backend`` replaces the config's attention backend."""
    return GPT(GPTConfig(
        vocab_size=task.tokenizer.vocab_size, context_len=task.context_len,
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model,
        positional=cfg.positional, attention_backend=backend or cfg.attention_backend,
    ))


def report_eval(trainer: Any, step: int, metrics: dict) -> None:
    """Print the validation metrics of an evaluation above the progress bar."""
    tqdm.write(f"step {step}: val answer ppl {metrics['val_answer_ppl']:.4f}, token ppl "
               f"{metrics['val_token_ppl']:.3f}, exact match {metrics['val_exact_match']:.3f}")


@dataclass
class ArithmeticRun:
    """One trained model: the kit's result, its seed, the validation curve from step 0 and the
    time its evaluations took during training."""

    result: TrainResult
    seed: int
    curve: dict[str, list[float]]  # step 0 and every evaluation: val metrics
    eval_s: float

    @property
    def model(self) -> nn.Module:
        """The trained model (in eval mode)."""
        return self.result.model

    @property
    def history(self) -> list[dict]:
        """The trainer's log records, evaluation metrics merged in."""
        return self.result.history


def train_arithmetic_lm(model: nn.Module, cfg: Any, task: ArithmeticTask, seed: int, *,
                        adapter: LMAdapter = GPT_ADAPTER, loss_fn: LossFn = gpt_loss,
                        tracker: SpectrumTracker | None = None,
                        on_eval: Sequence[EvalHook] = (report_eval,),
                        log_path: Path | None = None) -> ArithmeticRun:
    """Train ``model`` on ``task`` with the kit's `train`, evaluating on the validation split.

    The model is moved to the config's device and evaluated once before training (step 0 of
    the curve); ``tracker`` records it then and every ``tracker.every`` updates. ``log_path``:
    the trainer's JSONL log (watch a long run with ``tail -f``).
    """
    eval_time = [0.0]

    def eval_fn(m: nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        metrics = evaluate_split(m, adapter, task, "val", cfg.n_eval_generate)
        eval_time[0] += time.perf_counter() - start
        return metrics

    device = resolve_device(cfg.device)
    dtype = resolve_autocast(cfg.autocast, device)
    model.to(device)
    if tracker is not None:
        tracker.record(model, 0)
    model.eval()
    with torch.no_grad(), (contextlib.nullcontext() if dtype is None
                           else torch.autocast(device_type=device.type, dtype=dtype)):
        initial = eval_fn(model)
    model.train()
    eval_time[0] = 0.0
    tcfg = train_config(cfg, seed, grad_clip=cfg.grad_clip, autocast=cfg.autocast,
                        log_interval=max(1, min(cfg.eval_every, 25)))
    result = train(model, tcfg, TaskBatches(task, cfg.batch_size), loss_fn=loss_fn,
                   eval_fn=eval_fn, on_step=[tracker] if tracker is not None else [],
                   on_eval=on_eval, log_path=log_path)
    curve = {"step": [0, *result.curve["step"]],
             **{k: [v, *result.curve[k]] for k, v in initial.items()}}
    return ArithmeticRun(result, seed, curve, eval_time[0])
