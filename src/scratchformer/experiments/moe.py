r"""Study ``moe.shakespeare``: dense FFN against mixtures of experts at equal *active* parameters.

Every model is the same character-level GPT on Tiny Shakespeare; only the FFN of each block
changes. With $h = 4d$ the dense width, every variant spends the parameters of one width-$h$
FFN per token (plus a router of $d\cdot E$):

- ``dense``: one FFN of width $h$.
- ``top1``: 4 experts of width $h$, top-1 (Switch; raw gate $p_i$), auxiliary balancing loss.
- ``top2``: 4 experts of width $h/2$, top-2 (gates renormalised over the two), auxiliary loss.
- ``deepseek``: DeepSeekMoE, fine-grained with $m = 4$: 16 experts of width $h/4$, top-3, plus
  one shared expert of width $h/4$; DeepSeek-V3 routing (sigmoid affinities normalised over
  the selected experts) and auxiliary-loss-free bias balancing.
- ``top1_bias``, ``top1_none``: ``top1`` with bias balancing, and with no balancing at all, to
  compare the load imbalance of the three balancing methods on the same architecture.

Reported per variant (mean ± std over seeds): validation loss (pure cross-entropy, nats/char,
random validation batches), total and active parameters, training tokens/s (timed after
training in interleaved rounds over all variants, fairer on a shared machine than the training
log's own throughput, which is also kept), and the load
balance of the routed experts, measured on every training batch: max/mean load (1 = perfect,
$E$ = collapse) and the entropy of the load distribution over experts (in units of $\log E$, so
1 = perfect). The bias method's $\gamma$ (``bias_rate``) is larger than DeepSeek-V3's $10^{-3}$
because these runs are a few hundred steps, not hundreds of thousands.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from scratchformer.data.lm_text import TokenizedText, char_data, random_batch
from scratchformer.experiments.kit import (
    CharGPTConfig,
    TrainResult,
    gpt_config,
    in_range,
    mean_std,
    positive,
    positive_real,
    text_split,
    torch_threads,
    train_char_lm,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training import Trainer
from scratchformer.viz.figures import new_figure, save_figure

VARIANTS = ("dense", "top1", "top2", "deepseek", "top1_bias", "top1_none")


@dataclass
class Config(CharGPTConfig):
    """Quick profile: one seed, 2-layer width-64 GPTs, 60 steps each on a 200k-char slice."""

    variants: str = ",".join(VARIANTS)  # comma-separated subset of VARIANTS
    seeds: int = 1
    aux_weight: float = 0.01
    bias_rate: float = 0.01
    bench_repeats: int = 3  # interleaved speed rounds over all variants (the first is warm-up)
    bench_steps: int = 5  # training steps timed per variant and round
    steps: int = 60
    lr: float = 2e-3
    min_lr: float = 2e-4
    eval_every: int = 30
    eval_batches: int = 10
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "seeds": positive, "aux_weight": in_range(0.0, math.inf), "bias_rate": positive_real,
        "bench_repeats": positive, "bench_steps": positive,
    }

    @property
    def variant_names(self) -> list[str]:
        """The variants to run, in the order given."""
        return [v.strip() for v in self.variants.split(",") if v.strip()]

    def check(self) -> None:
        """Variants must name entries of VARIANTS; d_model must split into the expert widths."""
        super().check()
        bad = [v for v in self.variant_names if v not in VARIANTS]
        if not self.variant_names or bad:
            raise ValueError(f"variants must be a comma-separated subset of {VARIANTS}, "
                             f"got {self.variants!r}" + (f" (unknown: {bad})" if bad else ""))
        if self.d_model % 16:
            raise ValueError(f"d_model must be a multiple of 16 (expert widths 4·d/4), "
                             f"got {self.d_model}")


FULL = {"seeds": 2, "text_chars": 0, "val_chars": 0, "steps": 600, "eval_every": 150,
        "eval_batches": 40, "bench_repeats": 6, "bench_steps": 10}


def variant_config(name: str, cfg: Config, vocab_size: int) -> GPTConfig:
    """The GPTConfig of variant ``name``: same attention and sizes, a different FFN."""
    h = 4 * cfg.d_model
    moe: dict[str, Any]
    if name == "dense":
        moe = {}
    elif name in ("top1", "top1_bias", "top1_none"):
        balance = {"top1": "aux", "top1_bias": "bias", "top1_none": "none"}[name]
        moe = dict(ffn="moe", moe_experts=4, moe_top_k=1, moe_hidden=h, moe_balance=balance)
    elif name == "top2":
        moe = dict(ffn="moe", moe_experts=4, moe_top_k=2, moe_hidden=h // 2)
    elif name == "deepseek":
        moe = dict(ffn="moe", moe_experts=16, moe_top_k=3, moe_hidden=h // 4, moe_shared=1,
                   moe_shared_hidden=h // 4, moe_router="sigmoid", moe_balance="bias")
    else:
        raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")
    return gpt_config(cfg, vocab_size, moe_aux_weight=cfg.aux_weight,
                      moe_bias_rate=cfg.bias_rate, **moe)


def train_variant(name: str, cfg: Config, data: TokenizedText, seed: int
                  ) -> tuple[TrainResult, list[np.ndarray]]:
    """Train variant ``name``; also its routing load at every step, per layer: (n_layers, E)
    fractions of assignments per expert (empty for the dense FFN)."""
    loads: list[np.ndarray] = []

    def on_step(trainer: Trainer, step: int, record: dict | None) -> None:
        model = trainer.model
        assert isinstance(model, GPT)
        if layers := model.moe_layers():
            loads.append(np.stack([m.last_stats.load.numpy() for m in layers]))
        model.update_moe_bias()

    result = train_char_lm(cfg, data, seed=seed, model_config=variant_config(
        name, cfg, data.vocab_size), on_step=[on_step])
    return result, loads


def measure_throughput(names: list[str], cfg: Config, data: TokenizedText
                       ) -> dict[str, float]:
    """Training tokens/s of each variant, timed in interleaved rounds so that a change of load
    on a shared machine hits every variant alike; the median round after a warm-up one."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x, y = random_batch(data.train, cfg.batch_size, cfg.context_len, gen)
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(cfg.seed)
        models[name] = GPT(variant_config(name, cfg, data.vocab_size)).train()
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=cfg.lr)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(cfg.bench_repeats):
        for name in names:
            model, opt = models[name], opts[name]
            t0 = time.perf_counter()
            for _ in range(cfg.bench_steps):
                loss = model(x, y)[1]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                model.update_moe_bias()
            times[name].append((time.perf_counter() - t0) / cfg.bench_steps)
    return {name: y.numel() / float(np.median(t[1:] if len(t) > 1 else t))
            for name, t in times.items()}


def balance_metrics(loads: list[np.ndarray]) -> dict[str, float]:
    """Max/mean load and normalised entropy (1 = balanced), averaged over steps and layers,
    over the whole run and over its last quarter."""
    if not loads:
        return {}
    arr = np.stack(loads)  # (steps, layers, E)
    E = arr.shape[-1]
    max_over_mean = arr.max(-1) * E
    p = np.clip(arr, 1e-12, 1.0)
    entropy = -(arr * np.log(p)).sum(-1) / np.log(E)
    tail = slice(3 * len(arr) // 4, None)
    return {"max_over_mean": float(max_over_mean.mean()),
            "entropy_norm": float(entropy.mean()),
            "max_over_mean_last_quarter": float(max_over_mean[tail].mean()),
            "entropy_norm_last_quarter": float(entropy[tail].mean())}


@register("moe.shakespeare", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Dense vs MoE (top-1, top-2) vs DeepSeekMoE at equal active parameters; load balance."""
    names = cfg.variant_names
    data = char_data(*text_split(cfg))
    results: dict[str, dict] = {}
    first_loads: dict[str, list[np.ndarray]] = {}
    curves: dict[str, dict] = {}
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        for name in names:
            runs = [train_variant(name, cfg, data, cfg.seed + s) for s in range(cfg.seeds)]
            first, first_loads[name] = runs[0]
            curves[name] = first.curve
            per_seed = [balance_metrics(loads) for _, loads in runs]
            results[name] = {
                "parameters": first.model.num_parameters(),
                "active_parameters": first.model.active_parameters(),
                "val_loss": mean_std([r.final() for r, _ in runs], values_key=None),
                "train_log_tokens_per_s": mean_std([r.tokens_per_s for r, _ in runs],
                                                   values_key=None),
                "balance": {k: mean_std([m[k] for m in per_seed], values_key=None)
                            for k in per_seed[0]},
                "config": {k: v for k, v in dataclasses.asdict(
                    variant_config(name, cfg, data.vocab_size)).items()
                    if k == "ffn" or k.startswith("moe_")},
            }
        speed = measure_throughput(names, cfg, data)
    for name in names:
        results[name]["tokens_per_s"] = speed[name]
    _plot_loads(first_loads, out)
    _plot_curves(curves, out)
    (out / "summary.md").write_text(_summary(results, cfg), encoding="utf-8")
    tradeoff = {"quality_name": "validation loss (nats/char)", "higher_is_better": False,
                "speed_name": "training tokens/s", "baseline": "dense",
                "points": [{"variant": n, "speed": r["tokens_per_s"],
                            "quality": r["val_loss"]["mean"]} for n, r in results.items()]}
    return {"variants": results, "tradeoff": tradeoff, "seeds": cfg.seeds, "steps": cfg.steps,
            "threads": cfg.threads or torch.get_num_threads(),
            "wall_s": time.perf_counter() - start}


def _summary(results: dict[str, dict], cfg: Config) -> str:
    """A Markdown table of the results (mean ± std over seeds)."""
    lines = [f"# moe.shakespeare ({cfg.seeds} seed(s), {cfg.steps} steps)", "",
             "Load balance over all steps (last quarter in brackets), mean ± std over seeds; "
             "max/mean is out of E (16 for deepseek, 4 otherwise), entropy is over log E. "
             "tokens/s: interleaved benchmark after training.", "",
             "| variant | params | active | val loss | tokens/s | max/mean load | entropy/log E |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        b = r["balance"]
        bal = (f"{b['max_over_mean']['mean']:.3f} ± {b['max_over_mean']['std']:.3f} "
               f"({b['max_over_mean_last_quarter']['mean']:.3f}) | "
               f"{b['entropy_norm']['mean']:.3f} ({b['entropy_norm_last_quarter']['mean']:.3f})"
               if b else "– | –")
        lines.append(f"| {name} | {r['parameters']} | {r['active_parameters']} | "
                     f"{r['val_loss']['mean']:.4f} ± {r['val_loss']['std']:.4f} | "
                     f"{r['tokens_per_s']:.0f} | {bal} |")
    return "\n".join(lines) + "\n"


def _plot_loads(loads: dict[str, list[np.ndarray]], out: Path) -> Path | None:
    """Fraction of assignments per expert (layer 0) against training step, one panel a variant."""
    moe = {k: v for k, v in loads.items() if v}
    if not moe:
        return None
    fig, axes = new_figure(4.0 * len(moe), 3.4, ncols=len(moe))
    axes = np.atleast_1d(axes)
    for ax, (name, per_step) in zip(axes, moe.items(), strict=True):
        arr = np.stack(per_step)[:, 0, :]  # (steps, E), first layer
        steps = np.arange(1, len(arr) + 1)
        window = max(1, len(arr) // 20)
        kernel = np.ones(window) / window
        for e in range(arr.shape[1]):
            ax.plot(steps[window - 1:], np.convolve(arr[:, e], kernel, mode="valid"), lw=1)
        ax.axhline(1.0 / arr.shape[1], color="grey", ls=":", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("fraction of assignments (layer 0)")
    return save_figure(fig, out / "expert_load.png")


def _plot_curves(curves: dict[str, dict], out: Path) -> Path:
    """Validation loss against step for every variant (first seed)."""
    fig, ax = new_figure(5.5, 3.8)
    for name, c in curves.items():
        ax.plot(c["step"], c["val_loss"], marker="o", ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/char)")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "val_loss.png")


__all__ = ["VARIANTS", "Config", "balance_metrics", "measure_throughput", "run", "train_variant",
           "variant_config"]
