"""Study ``sparse.quality``: dense against block-sparse attention in the same character GPT.

Trains one small GPT on Tiny Shakespeare characters twice per seed, once with dense causal
attention and once with the "block_sparse" backend (window + every-s-th token, w = s = round(√T)
by default, docs/derivations/sparse-attention-complexity.md), at the same steps, batch and
learning-rate schedule, and reports the validation loss and the training throughput of each.
Also draws the window, strided and union layouts as dense masks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.experiments.registry import register
from scratchformer.experiments.shakespeare import char_data, estimate_loss, load_text, random_batch
from scratchformer.experiments.threads import torch_threads
from scratchformer.functional.sparse import (
    layout_to_mask,
    local_layout,
    strided_layout,
    window_strided_layout,
)
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training import TrainConfig, Trainer

BACKENDS = ("dense", "block_sparse")


@dataclass
class Config:
    """Quick defaults: a 2-layer width-48 character GPT, context 64, one seed."""

    text_chars: int = 60_000  # first characters of the corpus; 0 = all of it
    val_chars: int = 6_000  # validation characters; 0 = all
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 48
    context_len: int = 64
    batch_size: int = 8
    steps: int = 40
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 5
    beta2: float = 0.99
    weight_decay: float = 0.1
    eval_every: int = 20
    eval_batches: int = 4
    sparse_block: int = 16
    sparse_window: int = 0  # 0 = round(√context_len)
    sparse_stride: int = 0  # 0 = round(√context_len)
    dense_backend: str = "sdpa"  # the dense kernel: "sdpa" or "scratch"
    seeds: int = 1
    seed: int = 0
    threads: int = 1  # torch threads while training; 0 = leave as is
    picture_len: int = 64  # length of the layout pictures


FULL = {"text_chars": 0, "val_chars": 0, "d_model": 64, "n_heads": 4, "context_len": 512,
        "batch_size": 8, "steps": 300, "warmup_steps": 30, "eval_every": 100,
        "eval_batches": 20, "sparse_block": 32, "seeds": 2}  # fmt: skip


def _check(cfg: Config) -> None:
    """Fail early on settings that cannot work, naming the field."""
    for name in ("n_layers", "n_heads", "d_model", "context_len", "batch_size", "steps",
                 "eval_every", "eval_batches", "sparse_block", "seeds", "picture_len"):  # fmt: skip
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("text_chars", "val_chars", "sparse_window", "sparse_stride", "threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.dense_backend not in ("sdpa", "scratch"):
        raise ValueError(f"dense_backend must be 'sdpa' or 'scratch', got {cfg.dense_backend!r}")


def window_stride(cfg: Config) -> tuple[int, int]:
    """The sparse model's (window, stride): the configured ones, or round(√context_len)."""
    root = max(1, round(math.sqrt(cfg.context_len)))
    return cfg.sparse_window or root, cfg.sparse_stride or root


def build(cfg: Config, vocab_size: int, backend: str) -> GPT:
    """The study's GPT (no dropout, no biases, tied embeddings) with ``backend`` attention."""
    window, stride = window_stride(cfg)
    return GPT(GPTConfig(vocab_size=vocab_size, context_len=cfg.context_len,
                         n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model,
                         dropout=0.0, bias=False,
                         attention_backend=cfg.dense_backend if backend == "dense" else backend,
                         sparse_block=cfg.sparse_block, sparse_window=window,
                         sparse_stride=stride))  # fmt: skip


def train_one(cfg: Config, train: Tensor, val: Tensor, vocab: int, backend: str, seed: int,
              log_path: Path | None) -> dict:
    """Train one model; its validation curve, final loss and training tokens per second."""
    torch.manual_seed(seed)
    model = build(cfg, vocab, backend)

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        x, y = random_batch(train, cfg.batch_size, cfg.context_len, gen)
        return x, y, y.numel()

    def loss_fn(m: nn.Module, batch: tuple) -> tuple[Tensor, int]:
        x, y, n = batch
        return m(x, y)[1], n

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": estimate_loss(m, val, cfg.eval_batches, cfg.batch_size,
                                          cfg.context_len, seed + 1)}  # fmt: skip

    tcfg = TrainConfig(max_steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr,
                       warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                       betas=(0.9, cfg.beta2), grad_clip=1.0, eval_interval=cfg.eval_every,
                       log_interval=min(10, cfg.eval_every), seed=seed, device="cpu",
                       autocast="off")  # fmt: skip
    history = Trainer(model, tcfg, train_batches=batches, loss_fn=loss_fn, eval_fn=eval_fn,
                      log_path=log_path).fit()  # fmt: skip
    evals = [r for r in history if "val_loss" in r]
    timed = history[1:] if len(history) > 2 else history  # the first window includes warm-up
    ms = float(np.median([r["ms_per_step"] for r in timed]))
    return {"val_loss": evals[-1]["val_loss"], "ms_per_step": ms,
            "tokens_per_s": cfg.batch_size * cfg.context_len / (ms / 1e3),
            "curve": {"step": [r["step"] for r in evals],
                      "val_loss": [r["val_loss"] for r in evals]}}  # fmt: skip


def _mean_std(xs: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
            "values": [float(x) for x in xs]}  # fmt: skip


def plot_layouts(cfg: Config, path: Path) -> Path:
    """Dense renders of the window, strided and union layouts at ``picture_len`` tokens."""
    from scratchformer.viz.figures import new_figure, save_figure

    L = cfg.picture_len
    w = s = max(1, round(math.sqrt(L)))
    b = min(cfg.sparse_block, L)
    layouts = {f"window w={w}": local_layout(L, b, w),
               f"every {s}-th token": strided_layout(L, b, s),
               f"union (w = s = {w})": window_strided_layout(L, b, w, s)}  # fmt: skip
    fig, axes = new_figure(width=10.5, height=3.8, ncols=3)
    for ax, (title, layout) in zip(axes, layouts.items(), strict=True):
        mask = layout_to_mask(layout)
        ax.imshow(mask.numpy(), cmap="Greys", interpolation="nearest")
        kept = layout.entries / (L * (L + 1) / 2)
        ax.set(title=f"{title}\n{layout.entries} pairs, {kept:.0%} of causal",
               xlabel="key j", ylabel="query i")  # fmt: skip
        for edge in range(b, L, b):  # query-block boundaries
            ax.axhline(edge - 0.5, color="tab:blue", lw=0.4, alpha=0.6)
    return save_figure(fig, path)


def plot_curves(runs: dict[str, list[dict]], path: Path) -> Path:
    """Validation loss against step, one line per backend and seed."""
    from scratchformer.viz.figures import new_figure, save_figure

    fig, ax = new_figure(width=6.0, height=4.0)
    for color, (backend, seeds) in zip(("black", "tab:blue"), runs.items(), strict=True):
        for i, r in enumerate(seeds):
            ax.plot(r["curve"]["step"], r["curve"]["val_loss"], "-o", ms=3, color=color,
                    alpha=0.8, label=backend if i == 0 else None)  # fmt: skip
    ax.set(xlabel="step", ylabel="validation loss (nats/char)", title="dense vs block-sparse")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


@register("sparse.quality", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Dense vs block-sparse attention in a char GPT at the same budget: loss and tokens/s."""
    _check(cfg)
    text_train, text_val = load_text(cfg)
    data = char_data(text_train, text_val)
    runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        for i in range(cfg.seeds):  # backends alternate, so load from outside hits both alike
            for backend in BACKENDS:
                log = out / f"train_log_{backend}_seed{cfg.seed + i}.jsonl"
                runs[backend].append(train_one(cfg, data.train, data.val, data.vocab_size,
                                               backend, cfg.seed + i, log))  # fmt: skip
    window, stride = window_stride(cfg)
    layout = window_strided_layout(cfg.context_len, cfg.sparse_block, window, stride)
    T = cfg.context_len
    plot_layouts(cfg, out / "layouts.png")
    plot_curves(runs, out / "val_loss.png")
    results = {b: {"val_loss": _mean_std([r["val_loss"] for r in rs]),
                   "tokens_per_s": _mean_std([r["tokens_per_s"] for r in rs]),
                   "curves": [r["curve"] for r in rs]} for b, rs in runs.items()}  # fmt: skip
    dense, sparse = results["dense"], results["block_sparse"]
    return {
        "backends": results,
        "sparse_minus_dense_val_loss": sparse["val_loss"]["mean"] - dense["val_loss"]["mean"],
        "sparse_over_dense_tokens_per_s": (sparse["tokens_per_s"]["mean"]
                                           / dense["tokens_per_s"]["mean"]),
        "layout": {"context_len": T, "block": cfg.sparse_block, "window": window,
                   "stride": stride, "pairs": layout.entries,
                   "fraction_of_causal_pairs": layout.entries / (T * (T + 1) / 2),
                   "gathered_scores": layout.gathered_entries},
        "dense_backend": cfg.dense_backend,
        "tradeoff": {"quality_name": "validation loss (nats/char)", "higher_is_better": False,
                     "speed_name": "training tokens/s", "baseline": "dense",
                     "points": [{"variant": b, "speed": r["tokens_per_s"]["mean"],
                                 "quality": r["val_loss"]["mean"]} for b, r in results.items()]},
        "seeds": cfg.seeds,
        "threads": cfg.threads or torch.get_num_threads(),
        "train_wall_s": time.perf_counter() - start,
    }
