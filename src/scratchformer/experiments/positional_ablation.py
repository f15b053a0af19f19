"""Study ``positional.ablation``: take the positional encoding out and order becomes invisible.

A bidirectional encoder with mean pooling and no positional encoding is a function of the
multiset of its tokens (docs/derivations/positional-ablation.md). On the "is it sorted?" task,
every multiset appears once sorted (label 1) and once rearranged (label 0), so such a model is
pinned to 50% test accuracy and a training loss >= ln 2, however long it trains. The same
encoder with sinusoidal or learned positions can solve the task. We train all three from the
same seeds on the same data and report test accuracy mean ± std over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from scratchformer.data.synthetic import TASKS, make_task
from scratchformer.experiments.kit import (
    TrainingConfig,
    choice,
    positive,
    positive_real,
    torch_threads,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.encoder import POSITIONALS, EncoderClassifier
from scratchformer.viz.figures import new_figure, save_figure

LN2 = math.log(2.0)


@dataclass
class Config(TrainingConfig):
    """Quick profile: a tiny encoder, 3 seeds, a few hundred steps."""

    task: str = "sorted"
    seq_len: int = 10
    vocab_size: int = 16
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    variants: tuple[str, ...] = ("sinusoidal", "learned", "none")
    seeds: int = 3
    steps: int = 150
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    eval_every: int = 15
    n_val: int = 512
    n_test: int = 2000
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "task": choice(*TASKS), "seq_len": positive, "vocab_size": positive, "n_layers": positive,
        "seeds": positive, "steps": positive, "eval_every": positive, "n_val": positive,
        "n_test": positive, "threads": positive, "lr": positive_real,
    }

    def check(self) -> None:
        super().check()
        bad = [v for v in self.variants if v not in POSITIONALS]
        if bad or not self.variants:
            raise ValueError(
                f"variants must be a non-empty subset of {POSITIONALS}, got {self.variants}")
        for name in ("batch_size", "n_val", "n_test"):
            value = getattr(self, name)
            if value % 2:
                raise ValueError(f"{name} must be even (examples come in pairs), got {value}")


def _data(cfg: Config, n: int, seed: int, device: torch.device):
    """A fixed evaluation set of ``n`` examples drawn from its own seeded generator."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return make_task(cfg.task, n, cfg.seq_len, cfg.vocab_size, generator=gen)


@torch.no_grad()
def _accuracy(model: EncoderClassifier, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``tokens`` rows classified as ``labels`` (eval mode, no gradients)."""
    model.eval()
    acc = (model(tokens).argmax(dim=-1) == labels).double().mean().item()
    model.train()
    return acc


def train_one(
    cfg: Config, positional: str, run_seed: int, device: torch.device, bar: tqdm | None = None
) -> dict:
    """Train one encoder on fresh batches; return its curves and final test accuracy.

    The data depend on ``run_seed`` only, so every positional variant sees the same batches.
    """
    val = _data(cfg, cfg.n_val, 1_000_003 * run_seed + 1, device)
    test = _data(cfg, cfg.n_test, 1_000_003 * run_seed + 2, device)
    train_gen = torch.Generator(device=device).manual_seed(1_000_003 * run_seed + 3)
    torch.manual_seed(run_seed)  # the initial weights depend on the run seed only
    model = EncoderClassifier(
        cfg.vocab_size, 2, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.seq_len,
        positional=positional, pooling="mean",
    ).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
    )
    losses, eval_steps, val_acc = [], [], []
    for step in range(1, cfg.steps + 1):
        tokens, labels = make_task(
            cfg.task, cfg.batch_size, cfg.seq_len, cfg.vocab_size, generator=train_gen
        )
        loss = torch.nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            eval_steps.append(step)
            val_acc.append(_accuracy(model, *val))
        if bar is not None:
            bar.update(1)
    return {
        "train_loss": losses,
        "eval_steps": eval_steps,
        "val_accuracy": val_acc,
        "test_accuracy": _accuracy(model, *test),
    }


def _summary(values: list[float]) -> dict:
    """Mean, sample std (ddof=1) and the values themselves, as plain floats."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "per_seed": [float(v) for v in arr]}


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average (shorter window at the start) for readable loss curves."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - width, 0)
    return (c[idx] - c[lo]) / (idx - lo)


_COLORS = {"sinusoidal": "tab:blue", "learned": "tab:orange", "none": "tab:gray"}
_LABELS = {"sinusoidal": "sinusoidal PE", "learned": "learned PE", "none": "no PE"}


def _plot_bars(cfg: Config, accuracy: dict, out: Path) -> Path:
    """Bar per variant: mean test accuracy, std error bar, one dot per seed."""
    fig, ax = new_figure(5.0, 3.6)
    xs = np.arange(len(cfg.variants))
    for x, v in zip(xs, cfg.variants, strict=True):
        s = accuracy[v]
        ax.bar(x, s["mean"], yerr=s["std"], capsize=6, color=_COLORS[v], alpha=0.8)
        ax.scatter(np.full(len(s["per_seed"]), x), s["per_seed"], color="black", s=12, zorder=3)
    ax.axhline(0.5, color="red", ls="--", lw=1, label="chance (exactly 1/2 without PE)")
    ax.set_xticks(xs, [_LABELS[v] for v in cfg.variants])
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel(f"test accuracy (mean ± std, {cfg.seeds} seeds)")
    ax.set_title(f"'{cfg.task}' task, length {cfg.seq_len}: removing PE")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, out / "accuracy_bars.png")


def _plot_curves(cfg: Config, runs: dict, out: Path) -> Path:
    """Training loss (left) and validation accuracy (right) against step, per variant."""
    fig, (ax_loss, ax_acc) = new_figure(10.0, 3.8, ncols=2)
    width = max(1, cfg.steps // 30)
    for v in cfg.variants:
        loss = np.array([r["train_loss"] for r in runs[v]])
        acc = np.array([r["val_accuracy"] for r in runs[v]])
        steps = np.arange(1, cfg.steps + 1)
        eval_steps = runs[v][0]["eval_steps"]
        sm = np.array([_smooth(row, width) for row in loss])
        ax_loss.plot(steps, sm.mean(0), color=_COLORS[v], label=_LABELS[v])
        ax_loss.fill_between(steps, sm.min(0), sm.max(0), color=_COLORS[v], alpha=0.2, lw=0)
        ax_acc.plot(eval_steps, acc.mean(0), color=_COLORS[v], marker="o", ms=3, label=_LABELS[v])
        ax_acc.fill_between(eval_steps, acc.min(0), acc.max(0), color=_COLORS[v], alpha=0.2, lw=0)
    ax_loss.axhline(LN2, color="red", ls="--", lw=1, label="ln 2 (floor without PE)")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    title = f"mean over seeds of a {width}-step moving average; band: min-max"
    ax_loss.set_title(title, fontsize=9)
    ax_loss.legend(fontsize=8)
    ax_acc.axhline(0.5, color="red", ls="--", lw=1)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("mean over seeds; band: min-max", fontsize=9)
    ax_acc.set_ylim(0.0, 1.05)
    ax_acc.legend(fontsize=8)
    return save_figure(fig, out / "training_curves.png")


@register(
    "positional.ablation",
    Config,
    full={"seq_len": 16, "d_model": 64, "seeds": 5, "steps": 500, "eval_every": 25,
          "n_test": 10000},
)
def run(cfg: Config, out: Path) -> dict:
    """Train an encoder with sinusoidal, learned and no positional encoding on an order task."""
    device = torch.device(cfg.device)
    runs: dict[str, list[dict]] = {v: [] for v in cfg.variants}
    total = len(cfg.variants) * cfg.seeds * cfg.steps
    with (torch_threads(cfg.threads),
          tqdm(total=total, desc="positional.ablation", unit="step", leave=False) as bar):
        for k in range(cfg.seeds):
            for v in cfg.variants:
                runs[v].append(train_one(cfg, v, cfg.seed + k, device, bar))
    accuracy = {v: _summary([r["test_accuracy"] for r in runs[v]]) for v in cfg.variants}
    tail = max(1, cfg.steps // 10)
    metrics: dict = {
        "task": cfg.task,
        "chance_accuracy": 0.5,
        "test_accuracy": accuracy,
        "final_train_loss": {
            v: _summary([float(np.mean(r["train_loss"][-tail:])) for r in runs[v]])
            for v in cfg.variants
        },
    }
    if "none" in cfg.variants:
        for v in cfg.variants:
            if v != "none":
                metrics[f"gap_{v}"] = accuracy[v]["mean"] - accuracy["none"]["mean"]
        lowest = min(min(r["train_loss"]) for r in runs["none"])
        metrics["no_pe_min_batch_loss"] = lowest
        metrics["ln2"] = LN2
    _plot_bars(cfg, accuracy, out)
    _plot_curves(cfg, runs, out)
    return metrics
