"""The one training loop every study uses.

One *step* is ``grad_accum_steps`` forward/backward passes (each loss scaled by
``1/grad_accum_steps``, so the summed gradient is that of the mean loss over the whole batch),
then global-norm gradient clipping, one AdamW update at the `warmup_cosine` learning rate, and
``zero_grad``. The loop reads numbers back from the device (``.item()``) only on logged steps,
so a step costs little beyond the model's own work.

Data is a function ``train_batches(step, micro, generator) -> batch``. Before each call the
trainer reseeds ``generator`` from ``(cfg.seed, step, micro)``, so a batch depends on nothing
else: a resumed run draws the same batches as an uninterrupted one, and changing how often one
evaluates does not change what one trains on. (An iterator of batches also works; on resume it is
fast-forwarded by the number of batches already consumed, which is exact only if it restarts
identically.)

``loss_fn(model, batch)`` returns the scalar loss, or ``(loss, n_tokens)`` to get tokens/s in the
log. ``eval_fn(model) -> {name: value}`` runs under ``torch.no_grad()`` and ``model.eval()``
with the RNG forked, so evaluation never perturbs training.

A fresh `Trainer.fit` seeds torch's global RNG (dropout) with ``cfg.seed``; checkpoints store it
with the optimizer, so ``fit(stop_at=N)`` + ``fit(resume_from=...)`` reproduces an uninterrupted
run bit for bit on CPU. Hooks ``on_step(trainer, step, record_or_None)`` run after every update
and ``on_eval(trainer, step, metrics)`` after every evaluation; a hook may set
``trainer.should_stop``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scratchformer.training.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_dir,
)
from scratchformer.training.metrics_log import LOG_FIELDS, MetricsLog
from scratchformer.training.optim import build_adamw
from scratchformer.training.schedule import check_schedule, warmup_cosine
from scratchformer.validation import check_int

BatchFn = Callable[[int, int, torch.Generator], Any]
LossFn = Callable[[nn.Module, Any], "Tensor | tuple[Tensor, int | Tensor]"]
EvalFn = Callable[[nn.Module], Mapping[str, float]]
StepHook = Callable[["Trainer", int, "dict | None"], None]
EvalHook = Callable[["Trainer", int, dict], None]

AUTOCAST_CHOICES = ("auto", "off", "bf16")


@dataclass
class TrainConfig:
    """Every knob of the training loop. Batch size and eval size belong to the data/eval fns."""

    max_steps: int = 1000
    lr: float = 1e-3  # peak learning rate
    min_lr: float | None = None  # floor of the cosine; None -> lr / 10
    warmup_steps: int = 0
    weight_decay: float = 0.1  # on weight matrices only (see training.optim)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global grad norm; None -> no clipping
    grad_accum_steps: int = 1
    log_interval: int = 10  # a record (and one device sync) every this many steps, and the last
    eval_interval: int = 0  # evaluate every this many steps; 0 -> only after the last step
    seed: int = 0
    device: str = "auto"  # "auto" -> cuda if available else cpu; or any torch device string
    autocast: str = "auto"  # "auto" -> bf16 on CUDA that supports it, else off; "off"; "bf16"
    compile: bool = False  # torch.compile the model for the forward/backward passes
    checkpoint_dir: str | None = None  # write <dir>/step_NNNNNNN checkpoints here
    checkpoint_interval: int = 0  # every this many steps; 0 -> only at the end / pause
    checkpoint_keep: int = 1  # keep this many newest checkpoints; 0 -> keep all
    resume: str | None = None  # checkpoint (or checkpoint_dir) to resume from
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        ints = {"max_steps": 1, "warmup_steps": 0, "grad_accum_steps": 1, "log_interval": 1,
                "eval_interval": 0, "seed": 0, "checkpoint_interval": 0, "checkpoint_keep": 0}
        for name, low in ints.items():
            check_int(f"TrainConfig.{name}", getattr(self, name), low)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps must be < max_steps={self.max_steps}, "
                             f"got {self.warmup_steps}")
        check_schedule(max_lr=self.lr, min_lr=self.lr / 10 if self.min_lr is None
                       else self.min_lr, warmup_steps=self.warmup_steps,
                       total_steps=self.max_steps)
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"TrainConfig.autocast must be one of {AUTOCAST_CHOICES}, "
                             f"got {self.autocast!r}")
        self.betas = tuple(self.betas)

    @property
    def floor_lr(self) -> float:
        """The learning rate the cosine decays to."""
        return self.lr / 10 if self.min_lr is None else self.min_lr


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is parsed by torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto' or a torch device string, got {name!r}") from e


def resolve_autocast(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None = full precision)."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    raise ValueError(f"autocast must be one of {AUTOCAST_CHOICES}, got {mode!r}")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside (nested tuples, lists, dicts, dataclasses) on ``device``.

    Objects with their own ``.to(device)`` (e.g. dataclass batches) are moved by that method.
    """
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        if callable(getattr(batch, "to", None)):
            return batch.to(device)
        fields = {f.name: to_device(getattr(batch, f.name), device)
                  for f in dataclasses.fields(batch)}
        return dataclasses.replace(batch, **fields)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_seed(seed: int, step: int, micro: int) -> int:
    """A 32-bit seed fixed by ``(seed, step, micro)`` alone (torch's CPU generator uses 32)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{micro}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def global_grad_norm(params: Iterable[Tensor]) -> Tensor:
    """L2 norm of all gradients together, as if they were one flat vector."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    if not norms:
        raise ValueError("no parameter has a gradient; does loss_fn use the model?")
    return torch.linalg.vector_norm(torch.stack(norms))


def _split_loss(out: Any) -> tuple[Tensor, int | Tensor | None]:
    """``loss`` or ``(loss, n_tokens)`` -> ``(loss, n_tokens or None)``, checked."""
    loss, n_tokens = (out if isinstance(out, tuple) and len(out) == 2 else (out, None))
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn must return a scalar loss tensor or (loss, n_tokens), got "
                        f"{type(out).__name__}{'' if not isinstance(out, Tensor) else out.shape}")
    return loss, n_tokens


class Trainer:
    """Trains ``model`` under a `TrainConfig`; `fit` returns the logged records."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        *,
        train_batches: BatchFn | Iterable,
        loss_fn: LossFn,
        eval_fn: EvalFn | None = None,
        log_path: str | Path | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        on_step: Sequence[StepHook] = (),
        on_eval: Sequence[EvalHook] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (model, batch) -> loss, got {loss_fn!r}")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"eval_fn must be callable (model) -> dict or None, got {eval_fn!r}")
        if callable(train_batches):
            self._batch_fn: BatchFn | None = train_batches
            self._batch_source: Iterable | None = None
        elif isinstance(train_batches, Iterable):
            self._batch_fn, self._batch_source = None, train_batches
        else:
            raise TypeError("train_batches must be a function (step, micro, generator) -> batch "
                            f"or an iterable of batches, got {type(train_batches).__name__}")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.autocast_dtype = resolve_autocast(cfg.autocast, self.device)
        self.model = model.to(self.device)
        self.optimizer = optimizer or build_adamw(
            self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.loss_fn, self.eval_fn = loss_fn, eval_fn
        self.log_path = None if log_path is None else Path(log_path)
        self.on_step: list[StepHook] = list(on_step)
        self.on_eval: list[EvalHook] = list(on_eval)
        self.generator = torch.Generator()  # CPU: batches are built on CPU, then moved
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._batches: Any = None
        self.step = 0  # optimizer updates done
        self.tokens_seen = 0  # up to the last log record; + _window_tokens since then
        self._window_tokens: int | Tensor = 0
        self.elapsed_s = 0.0
        self.history: list[dict] = []
        self.should_stop = False  # a hook may set this to end training after the current step

    # ------------------------------------------------------------------ one step

    def lr_at(self, step: int) -> float:
        """Learning rate of the update with 0-based index ``step``."""
        return warmup_cosine(step, max_lr=self.cfg.lr, min_lr=self.cfg.floor_lr,
                             warmup_steps=self.cfg.warmup_steps, total_steps=self.cfg.max_steps)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context for forward passes (a no-op in full precision)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def next_batch(self, step: int, micro: int) -> Any:
        """Micro-batch ``micro`` of update ``step``, on the trainer's device."""
        if self._batch_fn is not None:
            self.generator.manual_seed(batch_seed(self.cfg.seed, step, micro))
            batch = self._batch_fn(step, micro, self.generator)
        else:
            try:
                batch = next(self._batches)
            except StopIteration:
                raise RuntimeError(f"train_batches ran out at step {step}, micro-batch {micro}; "
                                   f"{self.cfg.max_steps} steps need "
                                   f"{self.cfg.max_steps * self.cfg.grad_accum_steps}") from None
        return to_device(batch, self.device)

    def train_step(
        self, step: int, *, want_grad_norm: bool = True
    ) -> tuple[Tensor, Tensor | None, int | Tensor | None]:
        """Update with 0-based index ``step``: returns (mean loss, pre-clip grad norm, tokens),
        as device tensors (no sync). The norm is None when not clipping and not wanted."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = self.cfg.grad_accum_steps
        total: Tensor | None = None
        tokens: int | Tensor | None = None
        for micro in range(accum):
            batch = self.next_batch(step, micro)
            with self.autocast():
                loss, n = _split_loss(self.loss_fn(self.forward_model, batch))
            (loss / accum if accum > 1 else loss).backward()
            loss = loss.detach()
            total = loss if total is None else total + loss
            if n is not None:
                tokens = n if tokens is None else tokens + n
        grad_norm = None
        if self.cfg.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self._params, self.cfg.grad_clip)
        elif want_grad_norm:
            grad_norm = global_grad_norm(self._params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        assert total is not None
        return (total / accum if accum > 1 else total), grad_norm, tokens

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` in eval mode, without gradients, on a forked RNG; return its floats."""
        if self.eval_fn is None:
            raise ValueError("Trainer.evaluate needs an eval_fn")
        was_training = self.model.training
        self.model.eval()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self.autocast():
                metrics = self.eval_fn(self.forward_model)
        finally:
            self.model.train(was_training)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"eval_fn must return a dict of numbers, got {type(metrics).__name__}")
        clash = set(metrics) & set(LOG_FIELDS)
        if clash:
            raise ValueError(f"eval_fn returned {sorted(clash)}, names the log uses for training; "
                             "rename them (e.g. 'val_loss')")
        return {str(k): float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path | None = None) -> Path:
        """Checkpoint the current state to ``directory`` (default: the step folder under
        ``cfg.checkpoint_dir``), pruning old ones to ``cfg.checkpoint_keep``."""
        if directory is None:
            if self.cfg.checkpoint_dir is None:
                raise ValueError("Trainer.save needs a directory or cfg.checkpoint_dir")
            directory = step_dir(self.cfg.checkpoint_dir, self.step)
        path = save_checkpoint(
            directory, model=self.model, optimizer=self.optimizer, step=self.step,
            config=dataclasses.asdict(self.cfg),
            extra={"trainer": {"tokens_seen": self.tokens_seen + int(self._window_tokens),
                               "elapsed_s": self.elapsed_s}},
        )
        if self.cfg.checkpoint_dir is not None and path.parent == Path(self.cfg.checkpoint_dir):
            prune_checkpoints(self.cfg.checkpoint_dir, self.cfg.checkpoint_keep)
        return path

    def load(self, path: str | Path) -> int:
        """Restore model, optimizer, RNGs and counters from a checkpoint; return its step.
        Nothing changes unless all of it, the counters included, reads and checks fine."""
        counters: dict[str, Any] = {}

        def check_counters(info: CheckpointInfo) -> None:
            state = info.extra.get("trainer", {})
            if not isinstance(state, Mapping):
                raise ValueError(f"extra 'trainer' must be a mapping, got {state!r}")
            tokens, elapsed = state.get("tokens_seen", 0), state.get("elapsed_s", 0.0)
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ValueError(f"extra 'trainer.tokens_seen' must be an int >= 0, got "
                                 f"{tokens!r}")
            if (isinstance(elapsed, bool) or not isinstance(elapsed, (int, float))
                    or not math.isfinite(elapsed) or elapsed < 0):
                raise ValueError(f"extra 'trainer.elapsed_s' must be a finite number >= 0, got "
                                 f"{elapsed!r}")
            counters.update(tokens_seen=tokens, elapsed_s=float(elapsed))

        info = load_checkpoint(path, model=self.model, optimizer=self.optimizer,
                               check=check_counters)
        self.step = info.step
        self.tokens_seen = counters["tokens_seen"]
        self.elapsed_s = counters["elapsed_s"]
        return info.step

    # ------------------------------------------------------------------ the loop

    def _is_eval_step(self, step: int) -> bool:
        every = self.cfg.eval_interval
        return self.eval_fn is not None and (step == self.cfg.max_steps
                                             or (every > 0 and step % every == 0))

    def _is_checkpoint_step(self, step: int, end: int) -> bool:
        every = self.cfg.checkpoint_interval
        return self.cfg.checkpoint_dir is not None and (
            step == end or self.should_stop or (every > 0 and step % every == 0))

    def _start(self, resume_from: str | Path | None) -> bool:
        """Set the counters for `fit`: resume, continue in-process, or start afresh.
        Returns whether a previous log should be continued rather than replaced."""
        if resume_from is None and self.step == 0:
            resume_from = self.cfg.resume
        continuing = resume_from is None and self.step > 0  # fit() again after stop_at
        if resume_from is not None:
            self.load(resume_from)
        elif not continuing:
            self.tokens_seen, self.elapsed_s = 0, 0.0
            torch.manual_seed(self.cfg.seed)
        if self._batch_source is not None and not continuing:
            self._batches = iter(self._batch_source)
            for _ in range(self.step * self.cfg.grad_accum_steps):
                next(self._batches)
        return resume_from is not None or continuing

    def _record(self, i: int, loss: Tensor, grad_norm: Tensor | None, counts_tokens: bool,
                seconds: float, steps: int) -> dict:
        """The log record after update ``i`` (this reads ``loss`` back: a device sync)."""
        n_tokens = int(self._window_tokens)
        self.tokens_seen += n_tokens
        self._window_tokens = 0
        return {
            "step": i + 1,
            "loss": loss.item(),
            "lr": self.lr_at(i),
            "grad_norm": None if grad_norm is None else grad_norm.item(),
            "tokens": self.tokens_seen if counts_tokens else None,
            "tokens_per_s": n_tokens / seconds if counts_tokens else None,
            "ms_per_step": 1000.0 * seconds / steps,
            "elapsed_s": self.elapsed_s,
        }

    def fit(self, resume_from: str | Path | None = None, *,
            stop_at: int | None = None) -> list[dict]:
        """Train to ``cfg.max_steps``, or pause after ``stop_at`` steps (the schedule still spans
        ``max_steps``; call `fit` again, or resume from the checkpoint, to go on). Starts from
        ``resume_from`` (or ``cfg.resume``) if given. Returns this call's log records."""
        cfg = self.cfg
        end = cfg.max_steps if stop_at is None else stop_at
        if isinstance(end, bool) or not isinstance(end, int) or not 0 < end <= cfg.max_steps:
            raise ValueError(f"stop_at must be an int in [1, max_steps={cfg.max_steps}], "
                             f"got {stop_at!r}")
        continue_log = self._start(resume_from)
        log = None if self.log_path is None else MetricsLog(
            self.log_path, resume_step=self.step if continue_log else None)
        self.history, self.should_stop = [], False
        self.model.train()
        bar = tqdm(total=end, initial=self.step, disable=not cfg.progress, desc="train",
                   dynamic_ncols=True)
        start = time.perf_counter() - self.elapsed_s
        window_start, window_steps, self._window_tokens = time.perf_counter(), 0, 0
        excluded = 0.0  # seconds spent in the current window on eval, hooks and checkpoints
        try:
            while self.step < end and not self.should_stop:
                i = self.step
                log_now = ((i + 1) % cfg.log_interval == 0 or i + 1 == end
                           or self._is_eval_step(i + 1))
                loss, grad_norm, tokens = self.train_step(i, want_grad_norm=log_now)
                self.step, window_steps = i + 1, window_steps + 1
                if tokens is not None:
                    self._window_tokens = self._window_tokens + tokens
                record = None
                if log_now:
                    now = time.perf_counter()
                    self.elapsed_s = now - start
                    record = self._record(i, loss, grad_norm, tokens is not None,
                                          max(now - window_start - excluded, 1e-12),
                                          window_steps)
                    window_start, window_steps, excluded = now, 0, 0.0
                pause = time.perf_counter()
                if self._is_eval_step(self.step) and record is not None:
                    metrics = self.evaluate()
                    record.update(metrics)
                    for hook in self.on_eval:
                        hook(self, self.step, metrics)
                if record is not None:
                    self.history.append(record)
                    if log is not None:
                        log.write(record)
                    if not math.isfinite(record["loss"]):
                        raise FloatingPointError(f"training loss is {record['loss']} at step "
                                                 f"{self.step}; lower lr or check the data")
                    bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False,
                                    **({} if record["tokens_per_s"] is None
                                       else {"tok/s": f"{record['tokens_per_s']:.3g}"}))
                for hook in self.on_step:
                    hook(self, self.step, record)
                if self._is_checkpoint_step(self.step, end):
                    self.elapsed_s = time.perf_counter() - start
                    self.save()
                excluded += time.perf_counter() - pause
                bar.update(1)
        finally:
            bar.close()
            if log is not None:
                log.close()
        self.elapsed_s = time.perf_counter() - start
        return self.history
