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
from typing import ClassVar

import torch

from scratchformer.data.lm_text import char_data
from scratchformer.experiments.kit import (
    CharGPTConfig,
    TrainResult,
    gpt_config,
    mean_std,
    positive,
    text_split,
    torch_threads,
    train_char_lm,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.sparse import (
    layout_to_mask,
    local_layout,
    strided_layout,
    window_strided_layout,
)
from scratchformer.models.gpt import GPTConfig

BACKENDS = ("dense", "block_sparse")


@dataclass
class Config(CharGPTConfig):
    """Quick defaults: a 2-layer width-48 character GPT, context 64, one seed."""

    sparse_block: int = 16
    sparse_window: int = 0  # 0 = round(√context_len)
    sparse_stride: int = 0  # 0 = round(√context_len)
    seeds: int = 1
    picture_len: int = 64  # length of the layout pictures
    text_chars: int = 60_000
    val_chars: int = 6_000
    d_model: int = 48
    batch_size: int = 8
    steps: int = 40
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 5
    eval_every: int = 20
    eval_batches: int = 4
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {"sparse_block": positive, "seeds": positive,
                                        "picture_len": positive}


FULL = {"text_chars": 0, "val_chars": 0, "d_model": 64, "n_heads": 4, "context_len": 512,
        "batch_size": 8, "steps": 300, "warmup_steps": 30, "eval_every": 100,
        "eval_batches": 20, "sparse_block": 32, "seeds": 2}  # fmt: skip


def window_stride(cfg: Config) -> tuple[int, int]:
    """The sparse model's (window, stride): the configured ones, or round(√context_len)."""
    root = max(1, round(math.sqrt(cfg.context_len)))
    return cfg.sparse_window or root, cfg.sparse_stride or root


def model_config(cfg: Config, vocab_size: int, backend: str) -> GPTConfig:
    """The study's GPT with ``backend`` attention ("dense": the configured dense kernel)."""
    window, stride = window_stride(cfg)
    return gpt_config(cfg, vocab_size,
                      attention_backend=cfg.attention_backend if backend == "dense" else backend,
                      sparse_block=cfg.sparse_block, sparse_window=window, sparse_stride=stride)


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


def plot_curves(runs: dict[str, list[TrainResult]], path: Path) -> Path:
    """Validation loss against step, one line per backend and seed."""
    from scratchformer.viz.figures import new_figure, save_figure

    fig, ax = new_figure(width=6.0, height=4.0)
    for color, (backend, seeds) in zip(("black", "tab:blue"), runs.items(), strict=True):
        for i, r in enumerate(seeds):
            ax.plot(r.curve["step"], r.curve["val_loss"], "-o", ms=3, color=color,
                    alpha=0.8, label=backend if i == 0 else None)  # fmt: skip
    ax.set(xlabel="step", ylabel="validation loss (nats/char)", title="dense vs block-sparse")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


@register("sparse.quality", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Dense vs block-sparse attention in a char GPT at the same budget: loss and tokens/s."""
    data = char_data(*text_split(cfg))
    runs: dict[str, list[TrainResult]] = {b: [] for b in BACKENDS}
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        for i in range(cfg.seeds):  # backends alternate, so load from outside hits both alike
            for backend in BACKENDS:
                log = out / f"train_log_{backend}_seed{cfg.seed + i}.jsonl"
                runs[backend].append(train_char_lm(
                    cfg, data, seed=cfg.seed + i, log_path=log,
                    model_config=model_config(cfg, data.vocab_size, backend)))
    window, stride = window_stride(cfg)
    layout = window_strided_layout(cfg.context_len, cfg.sparse_block, window, stride)
    T = cfg.context_len
    plot_layouts(cfg, out / "layouts.png")
    plot_curves(runs, out / "val_loss.png")
    results = {b: {"val_loss": mean_std([r.final() for r in rs]),
                   "tokens_per_s": mean_std([r.tokens_per_s for r in rs]),
                   "curves": [r.curve for r in rs]} for b, rs in runs.items()}  # fmt: skip
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
        "dense_backend": cfg.attention_backend,
        "tradeoff": {"quality_name": "validation loss (nats/char)", "higher_is_better": False,
                     "speed_name": "training tokens/s", "baseline": "dense",
                     "points": [{"variant": b, "speed": r["tokens_per_s"]["mean"],
                                 "quality": r["val_loss"]["mean"]} for b, r in results.items()]},
        "seeds": cfg.seeds,
        "threads": cfg.threads or torch.get_num_threads(),
        "train_wall_s": time.perf_counter() - start,
    }
