r"""Study ``norm.placement``: Pre-LN vs Post-LN — gradients at initialisation and stability.

The same character-level GPT on Tiny Shakespeare is built with the normalisation inside the
residual branch (Pre-LN, ``x + F(N(x))``) or after the residual sum (Post-LN, ``N(x + F(x))``),
at several depths, and trained for a fixed budget with Adam over a grid of learning rates,
with and without a linear learning-rate warmup. Gradient clipping, weight decay and dropout are
off by default: each damps or hides exactly the instability being measured (clipping is a knob).

**Gradients at initialisation.** Xiong et al. (2020, "On Layer Normalization in the Transformer
Architecture") show, for Xavier-initialised weights, that the gradient of the last layer's
parameters does not shrink with depth $L$ in a Post-LN network, $\|\partial\mathcal L/\partial
W^{(L)}\| = O(d\sqrt{\ln d})$, while in a Pre-LN network it scales like
$O(d\sqrt{\ln d / L})$: the Pre-LN residual stream is a sum of $L$ roughly independent branch
outputs, its norm grows like $\sqrt L$, and the final LayerNorm divides every gradient through
it by that norm (docs/derivations/layernorm-geometry.md: LN's Jacobian carries a factor
$1/\sigma$). Post-LN renormalises the stream after every sub-layer, so nothing shrinks the
gradients near the output, and each LN on the way back to the input divides them by its input's
scale, so they *fall* towards the input. Large gradients at the output with Adam's
normalised update size make the first steps at full learning rate large, which is why
Post-LN needs warmup, while Pre-LN can start at the peak rate. The study measures
$\|\partial\mathcal L/\partial\theta_l\|$ for every block $l$ (averaged over a few batches), for
``init="xavier"`` (Glorot-normal block matrices, the setting of the theory) and for GPT-2's
initialisation (N(0, 0.02²), residual projections scaled by $1/\sqrt{2L}$, which keeps the
Pre-LN stream's scale independent of depth and so removes its $1/\sqrt L$).

**Training.** Every (depth, placement, warmup, learning rate, seed) run records the training
loss and per-block gradient norms every ``record_every`` steps and the final validation loss. A
run *diverges* when a recorded loss is not finite or its final validation loss exceeds its own
validation loss at initialisation (about ln V) by more than ``divergence_margin`` nats. Since
LayerNorm bounds the activations, an unstable run more often *stalls* than blows up, so the study
also counts runs that end no better than the unigram model (the training split's character
frequencies, the best predictor that ignores context), on the same validation text. The
per-block gradient norms during training (``grad_norms_layers_training.png``) show where a
stalled run stops learning: each Post-LN LayerNorm on the way down multiplies the gradient by
its Jacobian's $1/\sigma$, so once the stream's scale grows the lower blocks can receive
vanishing gradients (Liu et al., 2020, "Understanding the Difficulty of Training Transformers").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.analysis.layer_grads import LayerGradTracker, init_grad_norms
from scratchformer.data.lm_text import TokenizedText, char_data, random_batch
from scratchformer.experiments.kit import (
    CharTextConfig,
    at_least,
    choice,
    gpt_config,
    in_range,
    lm_batches,
    lm_eval,
    positive,
    positive_real,
    text_split,
    torch_threads,
    train,
    train_config,
    unit_real,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.gpt import GPT
from scratchformer.nn.block import NORM_POSITIONS
from scratchformer.training import Trainer
from scratchformer.validation import check_real
from scratchformer.viz.figures import new_figure, save_figure

INITS = ("xavier", "gpt2")
_POS_STYLE = {"pre": "-", "post": "--"}
_POS_COLOR = {"pre": "tab:blue", "post": "tab:red"}


def _each(rule: Rule) -> Rule:
    """A non-empty tuple whose every element passes ``rule``: a sweep needs at least one point."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, (tuple, list)) or not value:
            raise ValueError(f"{name} must be a non-empty tuple, got {value!r}")
        for i, v in enumerate(value):
            rule(f"{name}[{i}]", v)

    return check


def _non_negative(name: str, value: Any) -> None:
    """A finite float >= 0 (0 turns the knob off)."""
    check_real(name, value, minimum=0.0)


@dataclass
class Config(CharTextConfig):
    """Quick profile: depths 2 and 4, width 32, 40 steps, one seed (``seed`` offsets each run's)."""

    depths: tuple[int, ...] = (2, 4)
    positions: tuple[str, ...] = NORM_POSITIONS
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    seeds: tuple[int, ...] = (0,)
    init: str = "xavier"  # "xavier" (Glorot-normal block matrices) or "gpt2"
    init_schemes: tuple[str, ...] = INITS  # measured at initialisation (cheap)
    min_lr_ratio: float = 1.0  # cosine floor as a fraction of lr; 1 = constant after warmup
    beta2: float = 0.98  # Adam's β₂ of Vaswani et al. and Xiong et al.
    grad_clip: float = 0.0  # max global gradient norm; 0 = no clipping
    init_batches: int = 4  # batches averaged for the gradient norms at initialisation
    record_every: int = 10  # steps between recorded losses and gradient norms
    divergence_margin: float = 0.5  # nats above the initial validation loss
    d_model: int = 32
    context_len: int = 32
    batch_size: int = 8
    steps: int = 40
    warmup_steps: int = 8  # the "with warmup" arm; the other arm has none
    eval_batches: int = 8  # validation batches for the initial and the final loss
    weight_decay: float = 0.0

    RULES: ClassVar[dict[str, Rule]] = {
        "depths": _each(positive), "positions": _each(choice(*NORM_POSITIONS)),
        "lrs": _each(positive_real), "seeds": _each(at_least(0)), "init": choice(*INITS),
        "init_schemes": _each(choice(*INITS)), "min_lr_ratio": unit_real,
        "beta2": in_range(0.0, 1.0, high_inclusive=False), "grad_clip": _non_negative,
        "init_batches": positive, "record_every": positive,
        "divergence_margin": _non_negative, "warmup_steps": positive,
    }


FULL = {"depths": (6, 12, 24), "lrs": (3e-4, 1e-3, 3e-3, 1e-2), "seeds": (0, 1),
        "d_model": 64, "n_heads": 4, "steps": 120, "warmup_steps": 24, "init_batches": 8,
        "eval_batches": 16, "text_chars": 0}


# ----------------------------------------------------------------------------- model


def build_gpt(cfg: Config, vocab_size: int, depth: int, position: str, init: str) -> GPT:
    """The study's GPT: no biases, no dropout, tied embeddings, ``init`` for the block matrices."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    model = GPT(gpt_config(cfg, vocab_size, n_layers=depth, attention_backend="sdpa",
                           norm_position=position))
    if init == "xavier":
        xavier_blocks(model)
    return model


@torch.no_grad()
def xavier_blocks(model: GPT) -> GPT:
    """Glorot-normal ``N(0, 2/(fan_in + fan_out))`` for every block matrix (no depth scaling)."""
    for block in model.blocks:
        for w in (block.attn.w_q, block.attn.w_k, block.attn.w_v, block.attn.w_o,
                  block.ffn.w1, block.ffn.w2):
            nn.init.normal_(w, std=math.sqrt(2.0 / (w.shape[0] + w.shape[1])))
    return model


# ----------------------------------------------------------------------------- gradient norms


def depth_slope(depths: Sequence[int], values: Sequence[float]) -> float:
    """The least-squares slope of log(value) against log(depth): −½ for values ∝ 1/√depth."""
    if len(depths) != len(values) or len(depths) < 2:
        raise ValueError(f"need >= 2 (depth, value) pairs of equal length, got {len(depths)} "
                         f"depths and {len(values)} values")
    x, y = np.log(np.asarray(depths, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------- divergence


def is_diverged(losses: Sequence[float], final_val_loss: float, initial_loss: float,
                margin: float) -> bool:
    """True when a loss is NaN/inf or the final validation loss exceeds initial + ``margin``."""
    if not math.isfinite(initial_loss):
        raise ValueError(f"initial_loss must be finite, got {initial_loss!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if not all(math.isfinite(v) for v in losses) or not math.isfinite(final_val_loss):
        return True
    return final_val_loss > initial_loss + margin


def unigram_loss(train: Tensor, val: Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``val`` under ``train``'s token frequencies (add-one)."""
    for name, ids in (("train", train), ("val", val)):
        if ids.ndim != 1 or ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"{name} must be a non-empty 1-D tensor of ids in [0, {vocab_size}), "
                             f"got shape {tuple(ids.shape)}")
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_p = (counts / counts.sum()).log()
    return float(-log_p[val].mean())


# ----------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    """One training run: its settings, trajectory and outcome."""

    depth: int
    position: str
    warmup: int
    lr: float
    seed: int
    initial_val_loss: float
    final_val_loss: float
    diverged: bool
    beats_unigram: bool
    steps_done: int
    steps: list[int]  # recorded steps
    losses: list[float]  # training loss at each recorded step
    grad_norm: list[float]  # global gradient norm (before any clipping) at each recorded step
    layer_grad_norms: list[list[float]]  # per-block gradient norms at each recorded step

    def summary(self) -> dict[str, Any]:
        """The scalar fields, for metrics.json."""
        return {k: getattr(self, k) for k in ("depth", "position", "warmup", "lr", "seed",
                                              "initial_val_loss", "final_val_loss",
                                              "diverged", "beats_unigram", "steps_done")}


def train_run(cfg: Config, data: TokenizedText, depth: int, position: str, warmup: int,
              lr: float, seed: int, unigram: float = math.inf) -> RunResult:
    """Train one GPT with the kit's trainer; a non-finite loss ends the run as diverged.

    ``unigram`` is the loss a run must beat to count as having learned (`unigram_loss`).
    """
    torch.manual_seed(seed)
    model = build_gpt(cfg, data.vocab_size, depth, position, cfg.init)
    val = lm_eval(data.val, cfg.eval_batches, cfg.batch_size, cfg.context_len, seed + 1)
    initial = val(model.eval())["val_loss"]
    tracker = LayerGradTracker(model.blocks)
    steps: list[int] = []
    losses: list[float] = []
    norms: list[float] = []
    layers: list[list[float]] = []

    def logged(step: int) -> bool:  # does the Trainer log (and check) the update ending here?
        return step % cfg.record_every == 0 or step == cfg.steps

    def on_step(trainer: Trainer, step: int, record: dict | None) -> None:
        if record is not None:
            steps.append(step)
            losses.append(record["loss"])
            norms.append(record["grad_norm"])
            layers.append([float(v) for v in tracker.norms()])
        tracker.armed = logged(step + 1)

    tracker.armed = logged(1)
    tcfg = train_config(cfg, seed, lr=lr, min_lr=lr * cfg.min_lr_ratio, warmup_steps=warmup,
                        grad_clip=cfg.grad_clip or None, log_interval=cfg.record_every,
                        eval_interval=0, device="cpu", progress=False)
    try:
        result = train(model, tcfg, lm_batches(data.train, cfg.batch_size, cfg.context_len),
                       on_step=[on_step], stop_on_nonfinite=True)
    finally:
        tracker.close()
    final = val(result.model)["val_loss"]
    return RunResult(depth, position, warmup, lr, seed, initial, final,
                     is_diverged(losses, final, initial, cfg.divergence_margin),
                     math.isfinite(final) and final < unigram, result.trainer.step,
                     steps, losses, norms, layers)


# ----------------------------------------------------------------------------- the study


def measure_init(cfg: Config, data: TokenizedText) -> dict[str, dict[int, dict[str, list]]]:
    """Per-block gradient norms at initialisation, mean over ``init_batches``, by scheme/depth."""
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    batches = [random_batch(data.train, cfg.batch_size, cfg.context_len, gen)
               for _ in range(cfg.init_batches)]
    out: dict[str, dict[int, dict[str, list]]] = {}
    for scheme in cfg.init_schemes:
        out[scheme] = {}
        for depth in cfg.depths:
            out[scheme][depth] = {}
            for position in cfg.positions:
                torch.manual_seed(cfg.seed)
                model = build_gpt(cfg, data.vocab_size, depth, position, scheme)
                norms = init_grad_norms(model, model.blocks, batches).mean(dim=0)
                out[scheme][depth][position] = norms.tolist()
    return out


def outcome_table(runs: Sequence[RunResult],
                  hit: Callable[[RunResult], bool]) -> dict[str, dict[str, dict[str, str]]]:
    """``table[position][warmup][lr] = "k/n"``: runs with ``hit(run)`` over depths and seeds."""
    table: dict[str, dict[str, dict[str, list[int]]]] = {}
    for r in runs:
        cell = table.setdefault(r.position, {}).setdefault(
            f"warmup {r.warmup}", {}).setdefault(f"{r.lr:g}", [0, 0])
        cell[0] += int(hit(r))
        cell[1] += 1
    return {p: {w: {lr: f"{k}/{n}" for lr, (k, n) in row.items()} for w, row in ws.items()}
            for p, ws in table.items()}


def final_losses(runs: Sequence[RunResult], lrs: Sequence[float]) -> dict[str, dict]:
    """``{"mean"|"std": {position: {warmup: {"L=depth": [value per lr]}}}}``: the final
    validation loss over seeds (non-finite runs left out; std 0 for a single seed)."""
    out: dict[str, dict] = {"mean": {}, "std": {}}
    for r in runs:
        for stat in ("mean", "std"):
            out[stat].setdefault(r.position, {}).setdefault(f"warmup {r.warmup}", {})[
                f"L={r.depth}"] = [float("nan")] * len(lrs)
    for r in runs:
        vals = np.array([q.final_val_loss for q in runs
                         if (q.position, q.warmup, q.depth, q.lr) == (r.position, r.warmup,
                                                                      r.depth, r.lr)
                         and math.isfinite(q.final_val_loss)])
        i = list(lrs).index(r.lr)
        key = (r.position, f"warmup {r.warmup}", f"L={r.depth}")
        out["mean"][key[0]][key[1]][key[2]][i] = float(vals.mean()) if vals.size else math.nan
        out["std"][key[0]][key[1]][key[2]][i] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return out


@register("norm.placement", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Pre-LN vs Post-LN: gradient norms per layer at init, divergence with/without warmup."""
    with torch_threads(cfg.threads):
        data = char_data(*text_split(cfg))
        unigram = unigram_loss(data.train, data.val, data.vocab_size)
        init = measure_init(cfg, data)
        runs = [train_run(cfg, data, depth, position, warmup, lr, cfg.seed + seed, unigram)
                for depth in cfg.depths for position in cfg.positions
                for warmup in (0, cfg.warmup_steps) for lr in cfg.lrs for seed in cfg.seeds]
    (out / "runs.json").write_text(json.dumps([r.__dict__ for r in runs]), encoding="utf-8")
    _plot_init(init, cfg, out)
    _plot_training(runs, cfg, out)
    _plot_layers_training(runs, cfg, out)
    _plot_final(runs, cfg, unigram, out)
    table = outcome_table(runs, lambda r: r.diverged)
    stalled = outcome_table(runs, lambda r: not r.beats_unigram)
    (out / "divergence.md").write_text(
        _table_markdown(table, cfg, "Diverged runs") + "\n"
        + _table_markdown(stalled, cfg, "Runs no better than the unigram model"),
        encoding="utf-8")
    init_summary = {
        scheme: {pos: {"last_layer": [by_depth[d][pos][-1] for d in cfg.depths],
                       "first_layer": [by_depth[d][pos][0] for d in cfg.depths],
                       "last_over_first": [by_depth[d][pos][-1] / by_depth[d][pos][0]
                                           for d in cfg.depths],
                       "depth_slope_last_layer": depth_slope(
                           cfg.depths, [by_depth[d][pos][-1] for d in cfg.depths])
                       if len(cfg.depths) > 1 else None}
                 for pos in cfg.positions}
        for scheme, by_depth in init.items()}
    return {
        "depths": list(cfg.depths),
        "vocab_size": data.vocab_size,
        "init_grad_norms": {s: {str(d): v for d, v in by.items()} for s, by in init.items()},
        "init_summary": init_summary,
        "unigram_val_loss": unigram,
        "divergence": table,
        "no_better_than_unigram": stalled,
        "diverged_total": {p: {f"warmup {w}": sum(r.diverged for r in runs
                                                  if r.position == p and r.warmup == w)
                               for w in (0, cfg.warmup_steps)} for p in cfg.positions},
        "runs_per_cell": len(cfg.depths) * len(cfg.seeds),
        "lrs": list(cfg.lrs),
        "final_val_loss": final_losses(runs, cfg.lrs),
        "runs": [r.summary() for r in runs],
    }


# ----------------------------------------------------------------------------- figures


def _plot_init(init: dict, cfg: Config, out: Path) -> Path:
    """Per-block gradient norm at initialisation vs block index, one panel per scheme × depth."""
    schemes = list(init)
    fig, axes = new_figure(3.4 * len(cfg.depths), 2.9 * len(schemes), ncols=len(cfg.depths),
                           nrows=len(schemes))
    axes = np.atleast_2d(np.asarray(axes).reshape(len(schemes), len(cfg.depths)))
    for i, scheme in enumerate(schemes):
        for j, depth in enumerate(cfg.depths):
            ax = axes[i, j]
            for pos in cfg.positions:
                vals = init[scheme][depth][pos]
                ax.plot(range(1, depth + 1), vals, marker="o", ms=3, color=_POS_COLOR[pos],
                        label=f"{pos}-LN")
            ax.set_yscale("log")
            ax.set_title(f"{scheme} init, L={depth}", fontsize=9)
            ax.set_xlabel("block")
            if j == 0:
                ax.set_ylabel("‖∂L/∂θ_block‖ at init")
            ax.legend(fontsize=7)
    return save_figure(fig, out / "grad_norms_init.png")


def _plot_training(runs: Sequence[RunResult], cfg: Config, out: Path) -> Path:
    """Global gradient norm during training (first seed): rows no/with warmup, cols depth."""
    warmups = (0, cfg.warmup_steps)
    fig, axes = new_figure(3.4 * len(cfg.depths), 5.6, ncols=len(cfg.depths), nrows=2)
    axes = np.asarray(axes).reshape(2, len(cfg.depths))
    colors = dict(zip(cfg.lrs, _lr_colors(len(cfg.lrs)), strict=True))
    for r in runs:
        if r.seed != cfg.seed + cfg.seeds[0] or not r.steps:
            continue
        ax = axes[warmups.index(r.warmup), cfg.depths.index(r.depth)]
        ax.plot(r.steps, r.grad_norm, _POS_STYLE[r.position], color=colors[r.lr], lw=1,
                label=f"{r.position} lr={r.lr:g}")
        if r.diverged:
            ax.plot(r.steps[-1], r.grad_norm[-1], "x", color="black", ms=6)
    for i, w in enumerate(warmups):
        for j, depth in enumerate(cfg.depths):
            ax = axes[i, j]
            ax.set_yscale("log")
            ax.set_title(f"L={depth}, warmup {w} steps", fontsize=9)
            ax.set_xlabel("step")
        axes[i, 0].set_ylabel("global grad norm")
    axes[0, -1].legend(fontsize=6, ncol=2)
    return save_figure(fig, out / "grad_norms_training.png")


def _plot_layers_training(runs: Sequence[RunResult], cfg: Config, out: Path) -> Path:
    """Per-block gradient norm (colour, log) vs recorded step at the largest depth, first
    seed and middle learning rate: rows pre/post, columns without/with warmup."""
    from matplotlib.colors import LogNorm

    depth, lr = max(cfg.depths), cfg.lrs[len(cfg.lrs) // 2]
    chosen = {(r.position, r.warmup): r for r in runs
              if (r.depth, r.lr, r.seed) == (depth, lr, cfg.seed + cfg.seeds[0])}
    values = [v for r in chosen.values() for row in r.layer_grad_norms for v in row
              if math.isfinite(v) and v > 0]
    norm = LogNorm(min(values), max(values)) if values else None
    warmups = (0, cfg.warmup_steps)
    fig, axes = new_figure(8.0, 2.6 * len(cfg.positions), ncols=2, nrows=len(cfg.positions))
    axes = np.asarray(axes).reshape(len(cfg.positions), 2)
    image = None
    for i, pos in enumerate(cfg.positions):
        for j, w in enumerate(warmups):
            ax, r = axes[i, j], chosen.get((pos, w))
            if r is not None and r.layer_grad_norms:
                grid = np.array(r.layer_grad_norms, dtype=float).T  # (blocks, records)
                image = ax.imshow(np.where(grid > 0, grid, np.nan), aspect="auto",
                                  origin="lower", norm=norm, cmap="magma",
                                  extent=(0.5, len(r.steps) + 0.5, 0.5, depth + 0.5))
                ticks = range(1, len(r.steps) + 1, max(1, len(r.steps) // 6))
                ax.set_xticks(list(ticks), [str(r.steps[t - 1]) for t in ticks])
            ax.set_title(f"{pos}-LN, warmup {w}, L={depth}, lr={lr:g}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("block")
    if image is not None:
        fig.colorbar(image, ax=axes, label="‖∂L/∂θ_block‖")
    return save_figure(fig, out / "grad_norms_layers_training.png")


def _plot_final(runs: Sequence[RunResult], cfg: Config, unigram: float, out: Path) -> Path:
    """Final validation loss vs learning rate per depth; diverged runs marked with ×."""
    fig, axes = new_figure(3.4 * len(cfg.depths), 3.2, ncols=len(cfg.depths))
    axes = np.atleast_1d(axes)
    ceiling = max(r.initial_val_loss for r in runs) + cfg.divergence_margin
    for j, depth in enumerate(cfg.depths):
        ax = axes[j]
        for pos in cfg.positions:
            for w, marker in ((0, "o"), (cfg.warmup_steps, "s")):
                rs = [r for r in runs if (r.depth, r.position, r.warmup) == (depth, pos, w)]
                means = [np.nanmean([min(r.final_val_loss, 2 * ceiling) if math.isfinite(
                    r.final_val_loss) else np.nan for r in rs if r.lr == lr] or [np.nan])
                         for lr in cfg.lrs]
                ax.plot(cfg.lrs, means, _POS_STYLE[pos] if w else ":", marker=marker, ms=4,
                        color=_POS_COLOR[pos], label=f"{pos}-LN, warmup {w}")
                bad = [r for r in rs if r.diverged]
                ax.plot([r.lr for r in bad], [min(r.final_val_loss, ceiling) if math.isfinite(
                    r.final_val_loss) else ceiling for r in bad], "x", color="black", ms=7)
        ax.axhline(unigram, color="gray", lw=0.8, ls=":", label="unigram model")
        ax.set_xscale("log")
        ax.set_title(f"L={depth} (× = diverged)", fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final validation loss (nats/char)")
    axes[0].legend(fontsize=7)
    return save_figure(fig, out / "final_loss.png")


def _lr_colors(n: int) -> list:
    """``n`` colours from light to dark, one per learning rate."""
    import matplotlib.pyplot as plt

    return [plt.get_cmap("viridis")(v) for v in np.linspace(0.0, 0.85, n)]


def _table_markdown(table: dict, cfg: Config, what: str) -> str:
    """An outcome table as Markdown: one row per (placement, warmup), one column per lr."""
    lrs = [f"{lr:g}" for lr in cfg.lrs]
    lines = [f"{what} / runs (over depths {list(cfg.depths)} and seeds "
             f"{list(cfg.seeds)}); {cfg.steps} steps, no clipping unless set.", "",
             "| placement | warmup | " + " | ".join(f"lr {lr}" for lr in lrs) + " |",
             "|---|---|" + "---|" * len(lrs)]
    for pos, ws in table.items():
        for w, row in ws.items():
            lines.append(f"| {pos}-LN | {w} | " + " | ".join(row[lr] for lr in lrs) + " |")
    return "\n".join(lines) + "\n"
