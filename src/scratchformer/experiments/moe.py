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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.experiments.registry import register
from scratchformer.experiments.shakespeare import (
    char_data,
    estimate_loss,
    load_text,
    random_batch,
)
from scratchformer.experiments.threads import torch_threads
from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.training import TrainConfig, Trainer
from scratchformer.viz.figures import new_figure, save_figure

VARIANTS = ("dense", "top1", "top2", "deepseek", "top1_bias", "top1_none")


@dataclass
class Config:
    """Quick profile: one seed, 2-layer width-64 GPTs, 60 steps each on a 200k-char slice."""

    variants: str = ",".join(VARIANTS)  # comma-separated subset of VARIANTS
    seeds: int = 1
    text_chars: int = 200_000  # 0 = the whole corpus
    val_chars: int = 20_000  # 0 = the whole validation split
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    context_len: int = 64
    batch_size: int = 12
    steps: int = 60
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    eval_every: int = 30
    eval_batches: int = 10
    aux_weight: float = 0.01
    bias_rate: float = 0.01
    bench_repeats: int = 3  # interleaved speed rounds over all variants (the first is warm-up)
    bench_steps: int = 5  # training steps timed per variant and round
    attention_backend: str = "sdpa"
    threads: int = 1
    seed: int = 0


FULL = {"seeds": 2, "text_chars": 0, "val_chars": 0, "steps": 600, "eval_every": 150,
        "eval_batches": 40, "bench_repeats": 6, "bench_steps": 10}


def variant_config(name: str, cfg: Config, vocab_size: int) -> GPTConfig:
    """The GPTConfig of variant ``name``: same attention and sizes, a different FFN."""
    h = 4 * cfg.d_model
    base = dict(vocab_size=vocab_size, context_len=cfg.context_len, n_layers=cfg.n_layers,
                n_heads=cfg.n_heads, d_model=cfg.d_model, dropout=0.0, bias=False,
                attention_backend=cfg.attention_backend, moe_aux_weight=cfg.aux_weight,
                moe_bias_rate=cfg.bias_rate)
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
        raise ValueError(f"variants must name entries of {VARIANTS}, got {name!r}")
    return GPTConfig(**base, **moe)


@dataclass
class VariantRun:
    """One trained variant: its curve, speed and per-step expert loads (layer-averaged)."""

    val_curve: dict[str, list[float]]
    tokens_per_s: float
    loads: list[np.ndarray]  # per step: (n_layers, E) fraction of assignments per expert
    params: int
    active: int


def train_variant(name: str, cfg: Config, data: Any, seed: int) -> VariantRun:
    """Train variant ``name`` with the project Trainer, logging the routing load every step."""
    torch.manual_seed(seed)
    model = GPT(variant_config(name, cfg, data.vocab_size))
    loads: list[np.ndarray] = []

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple[Tensor, Tensor, int]:
        x, y = random_batch(data.train, cfg.batch_size, cfg.context_len, gen)
        return x, y, y.numel()

    def loss_fn(m: nn.Module, batch: tuple) -> tuple[Tensor, int]:
        x, y, n = batch
        return m(x, y)[1], n

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_loss": estimate_loss(m, data.val, cfg.eval_batches, cfg.batch_size,
                                          cfg.context_len, seed + 1)}

    def on_step(trainer: Trainer, step: int, record: dict | None) -> None:
        layers = model.moe_layers()
        if layers:
            loads.append(np.stack([m.last_stats.load.numpy() for m in layers]))
        model.update_moe_bias()

    tcfg = TrainConfig(max_steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr,
                       warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
                       betas=(0.9, 0.99), grad_clip=1.0, eval_interval=cfg.eval_every,
                       log_interval=min(10, cfg.eval_every), seed=seed, device="cpu",
                       autocast="off")
    trainer = Trainer(model, tcfg, train_batches=batches, loss_fn=loss_fn, eval_fn=eval_fn,
                      on_step=[on_step])
    history = trainer.fit()
    evals = [r for r in history if "val_loss" in r]
    speeds = [r["tokens_per_s"] for r in history[1:] if r.get("tokens_per_s")]
    return VariantRun({"step": [r["step"] for r in evals],
                       "val_loss": [r["val_loss"] for r in evals]},
                      float(np.median(speeds)) if speeds else float("nan"), loads,
                      model.num_parameters(), model.active_parameters())


def measure_throughput(names: list[str], cfg: Config, data: Any) -> dict[str, float]:
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


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def _check(cfg: Config) -> list[str]:
    """The variant names to run; fail early on settings that cannot work."""
    names = [v.strip() for v in cfg.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if not names or bad:
        raise ValueError(f"variants must be a comma-separated subset of {VARIANTS}, "
                         f"got {cfg.variants!r}")
    for name in ("seeds", "n_layers", "n_heads", "d_model", "context_len", "batch_size",
                 "steps", "eval_every", "eval_batches", "bench_repeats", "bench_steps"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if cfg.d_model % 16:
        raise ValueError(f"d_model must be a multiple of 16 (expert widths 4·d/4), "
                         f"got {cfg.d_model}")
    return names


@register("moe.shakespeare", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Dense vs MoE (top-1, top-2) vs DeepSeekMoE at equal active parameters; load balance."""
    names = _check(cfg)
    data = char_data(*load_text(cfg))
    results: dict[str, dict] = {}
    first_loads: dict[str, list[np.ndarray]] = {}
    curves: dict[str, dict] = {}
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        for name in names:
            runs = [train_variant(name, cfg, data, cfg.seed + s) for s in range(cfg.seeds)]
            first_loads[name] = runs[0].loads
            curves[name] = runs[0].val_curve
            per_seed = [balance_metrics(r.loads) for r in runs]
            results[name] = {
                "parameters": runs[0].params,
                "active_parameters": runs[0].active,
                "val_loss": _mean_std([r.val_curve["val_loss"][-1] for r in runs]),
                "train_log_tokens_per_s": _mean_std([r.tokens_per_s for r in runs]),
                "balance": {k: _mean_std([m[k] for m in per_seed])
                            for k in (per_seed[0] if per_seed[0] else {})},
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
