"""Study ``feedforward.gradient_flow``: GELU vs ReLU in deep stacks — gradient norms, dead units.

Two settings, both on Gaussian inputs x ~ N(0, I) with a toy regression target
y = sin(x·u) read out by a linear head, loss = mean squared error:

* ``plain``: a residual-free stack h_l = act(h_{l−1} W_l + b_l), W_l ~ N(0, 2/width) (He init)
  and b_l = 0 for *both* activations. He init makes the ReLU stack exactly critical (the second
  moment of the signal and of the gradient are preserved layer to layer); using the same
  weights for GELU (paired: same seed, same W, same data) isolates the activation's shape.
* ``residual``: h_l = h_{l−1} + FeedForward_l(h_{l−1}), the transformer's FFN (d_hidden =
  4·width, nn.Linear-like init) with no normalisation; dead units are counted among its hidden
  units and the weight gradient reported is that of W1.

At initialisation it measures, per layer, ‖∂L/∂W_l‖, ‖∂L/∂h_l‖, the dead-unit fraction (units
whose act'(z) is exactly zero for every input of the batch), the fraction of zero act'(z)
entries and the mean cosine between the inputs' representations, and compares the ReLU dead
fraction with the infinite-width prediction of docs/derivations/gelu.md. Then it trains the
plain stack with Adam on fresh batches and follows the dead fraction on a fixed probe batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from tqdm import tqdm

from scratchformer.analysis.gradient_flow import (
    OutputGradRecorder,
    dead_unit_fraction,
    first_to_last_ratio,
    layer_grad_norms,
    mean_and_std,
    mean_pairwise_cosine,
    meanfield_second_moments,
    relu_cosine_map,
    relu_dead_probability,
    zero_fraction,
)
from scratchformer.experiments.kit import StudyConfig, at_least, positive, torch_threads
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.activations import (
    activation_derivative,
    gelu,
    gelu_derivative,
    get_activation,
    relu,
    relu_derivative,
)
from scratchformer.nn.feedforward import FeedForward
from scratchformer.viz.figures import new_figure, save_figure

SETTINGS = ("plain", "residual")
_COLORS = {"relu": "tab:red", "gelu": "tab:blue", "gelu_tanh": "tab:cyan"}


@dataclass
class Config(StudyConfig):
    """Quick profile defaults; ``full`` in the registration below widens everything."""

    depths: tuple[int, ...] = (16,)
    width: int = 128
    batch: int = 256
    seeds: int = 3
    activations: tuple[str, ...] = ("relu", "gelu")
    settings: tuple[str, ...] = SETTINGS
    train_steps: int = 100
    train_lrs: tuple[float, ...] = (1e-3, 1e-2)
    train_seeds: int = 2
    log_every: int = 10
    approx_points: int = 200_001
    threads: int = 1  # width-128 layers: a second thread mostly waits (0 = torch's default)

    RULES: ClassVar[dict[str, Rule]] = {"width": positive, "seeds": positive,
                                        "train_seeds": positive, "log_every": positive,
                                        "batch": at_least(2), "approx_points": at_least(2)}

    def check(self) -> None:
        super().check()
        if not self.depths or min(self.depths) < 2:
            raise ValueError(f"depths must be non-empty with every depth >= 2, got {self.depths}")
        for act in self.activations:
            activation_derivative(act)  # raises a ValueError naming the choices
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad or not self.settings:
            raise ValueError(
                f"settings must be a non-empty subset of {SETTINGS}, got {self.settings}")


def tanh_approximation_error(n_points: int = 200_001, limit: float = 10.0) -> tuple[float, float]:
    """max |GELU_tanh(x) − GELU(x)| over a float64 grid on [−limit, limit], and where it occurs."""
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    x = torch.linspace(-limit, limit, n_points, dtype=torch.float64)
    err = (gelu(x, approximate="tanh") - gelu(x)).abs()
    i = int(err.argmax())
    return err[i].item(), x[i].item()


class PlainLayer(nn.Module):
    """h ↦ act(h W + b) with He-normal W ~ N(0, 2/width) and b = 0 (no residual path)."""

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.act = get_activation(activation)
        self.w = nn.Parameter(torch.randn(width, width) * math.sqrt(2.0 / width))
        self.b = nn.Parameter(torch.zeros(width))

    @property
    def weight(self) -> torch.Tensor:
        """The weight whose gradient norm the study reports."""
        return self.w

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activation z = h W + b."""
        return h @ self.w + self.b

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """act(z)."""
        return self.act(self.hidden(h))


class ResidualLayer(nn.Module):
    """h ↦ h + FeedForward(h): a transformer block's FFN half without normalisation."""

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.ffn = FeedForward(width, 4 * width, activation=activation)

    @property
    def weight(self) -> torch.Tensor:
        """W1, the weight into the FFN's hidden units."""
        return self.ffn.w1

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the FFN's hidden units."""
        return self.ffn.hidden(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h + FFN(h)."""
        return h + self.ffn(h)


class Stack(nn.Module):
    """``depth`` layers of one setting, then a linear read-out to one number per input."""

    def __init__(self, setting: str, depth: int, width: int, activation: str) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
        layer_cls = PlainLayer if setting == "plain" else ResidualLayer
        self.layers = nn.ModuleList(layer_cls(width, activation) for _ in range(depth))
        self.head = nn.Parameter(torch.randn(width) / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width) → (N,) predictions."""
        for layer in self.layers:
            x = layer(x)
        return x @ self.head


def teacher_batch(
    n: int, u: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x ~ N(0, I) of shape (n, width) and targets y = sin(x·u)."""
    x = torch.randn(n, u.shape[0], generator=generator, dtype=u.dtype).to(u.device)
    return x, torch.sin(x @ u)


def probe(model: Stack, x: torch.Tensor, y: torch.Tensor, activation: str) -> dict:
    """One forward/backward pass; per-layer gradient and dead-unit statistics as tensors."""
    model.zero_grad(set_to_none=True)
    with OutputGradRecorder(list(model.layers)) as rec:
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
    inputs = [x, *rec.outputs[:-1]]
    d_act = activation_derivative(activation)
    with torch.no_grad():
        pre = [layer.hidden(h) for layer, h in zip(model.layers, inputs, strict=True)]
        act_grads = [d_act(z) for z in pre]
    return {
        "loss": loss.item(),
        "grad_norm": layer_grad_norms([layer.weight for layer in model.layers]),
        "stream_grad_norm": rec.grad_norms(),
        "dead": torch.tensor([dead_unit_fraction(g) for g in act_grads]),
        "zero_grad": torch.tensor([zero_fraction(g) for g in act_grads]),
        "cosine": torch.tensor([mean_pairwise_cosine(h) for h in inputs]),
        "preact_ms": torch.tensor([z.double().pow(2).mean().item() for z in pre]),
    }


def relu_theory(x: torch.Tensor, depth: int) -> dict[str, list[float]]:
    """Infinite-width prediction for the plain ReLU stack: input cosine and dead fraction per layer.

    Starts from the inputs' pairwise cosines, iterates κ (relu_cosine_map) elementwise and turns
    each layer's mean input cosine into P(dead) with relu_dead_probability.
    """
    xn = x.double() / x.double().norm(dim=1, keepdim=True)
    cos = xn @ xn.T
    n = x.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    cosines, dead = [], []
    for _ in range(depth):
        c = cos[off].mean().item()
        cosines.append(c)
        dead.append(relu_dead_probability(min(max(c, 0.0), 1.0), n))
        cos = relu_cosine_map(cos)
    return {"cosine": cosines, "dead_fraction": dead}


def train_trajectory(
    cfg: Config, depth: int, activation: str, lr: float, seed: int
) -> dict[str, list[float]]:
    """Train the plain stack with Adam on fresh batches; log probe loss and mean dead fraction."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(cfg.width, generator=gen) / math.sqrt(cfg.width)
    x_probe, y_probe = teacher_batch(cfg.batch, u, gen)
    torch.manual_seed(seed)
    model = Stack("plain", depth, cfg.width, activation)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    d_act = activation_derivative(activation)
    steps, losses, dead = [], [], []
    for step in range(cfg.train_steps + 1):
        if step % cfg.log_every == 0 or step == cfg.train_steps:
            with torch.no_grad():
                h, fractions = x_probe, []
                for layer in model.layers:
                    z = layer.hidden(h)
                    fractions.append(dead_unit_fraction(d_act(z)))
                    h = layer.act(z)
                steps.append(step)
                losses.append((h @ model.head - y_probe).pow(2).mean().item())
                dead.append(sum(fractions) / len(fractions))
        if step == cfg.train_steps:
            break
        x, y = teacher_batch(cfg.batch, u, gen)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"steps": steps, "loss": losses, "dead": dead}


def _summary(runs: list[dict]) -> dict:
    """Mean/std across seeds of every per-layer statistic, plus the first/last-layer ratio."""
    out: dict = {}
    for key in ("grad_norm", "stream_grad_norm", "dead", "zero_grad", "cosine", "preact_ms"):
        mean, std = mean_and_std(torch.stack([r[key] for r in runs]))
        name = {"dead": "dead_fraction", "zero_grad": "zero_grad_fraction"}.get(key, key)
        out[f"{name}_mean"] = mean.tolist()
        out[f"{name}_std"] = std.tolist()
    norms = torch.stack([r["grad_norm"] for r in runs])
    out["grad_norm_min"] = norms.min(dim=0).values.tolist()
    out["grad_norm_max"] = norms.max(dim=0).values.tolist()
    ratios = torch.tensor([first_to_last_ratio(r["grad_norm"]) for r in runs])
    r_mean, r_std = mean_and_std(ratios)
    out["ratio_first_last_mean"] = r_mean.item()
    out["ratio_first_last_std"] = r_std.item()
    dead = torch.stack([r["dead"] for r in runs])
    out["dead_fraction_avg"] = dead.mean().item()
    out["dead_fraction_last_layer"] = dead[:, -1].mean().item()
    out["loss_mean"] = sum(r["loss"] for r in runs) / len(runs)
    return out


def _plot_activations(out: Path) -> None:
    """GELU, its tanh approximation and ReLU with their derivatives, and the approximation error."""
    x = torch.linspace(-4.0, 4.0, 2001, dtype=torch.float64)
    fig, axes = new_figure(13.0, 3.8, ncols=3)
    axes[0].plot(x, relu(x), color=_COLORS["relu"], label="ReLU")
    axes[0].plot(x, gelu(x), color=_COLORS["gelu"], label="GELU = x·Φ(x)")
    axes[0].plot(x, gelu(x, "tanh"), "--", color=_COLORS["gelu_tanh"], label="GELU (tanh)")
    axes[0].set_title("activation")
    axes[1].plot(x, relu_derivative(x), color=_COLORS["relu"], label="ReLU'")
    axes[1].plot(x, gelu_derivative(x), color=_COLORS["gelu"], label="GELU' = Φ + xφ")
    axes[1].plot(x, gelu_derivative(x, "tanh"), "--", color=_COLORS["gelu_tanh"], label="tanh'")
    axes[1].set_title("derivative")
    err = gelu(x, "tanh") - gelu(x)
    axes[2].plot(x, err, color="k")
    axes[2].set_title("GELU_tanh − GELU")
    for ax in axes:
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    save_figure(fig, out / "activations.png")


def _band(ax, xs, mean, lo, hi, color: str, label: str, style: str = "-") -> None:
    """Plot ``mean`` against ``xs`` with a shaded band from ``lo`` to ``hi``."""
    ax.plot(xs, mean, style, color=color, label=label)
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


def _mean_std_band(ax, mean: list[float], std: list[float], color: str, label: str, style: str):
    """Plot a per-layer mean ± std (linear axes)."""
    m, s = torch.tensor(mean), torch.tensor(std)
    _band(ax, range(1, len(mean) + 1), m, m - s, m + s, color, label, style)


def _plot_init(cfg: Config, init: dict, theory: dict, out: Path) -> None:
    """Per-layer gradient norms (log scale) and dead fractions for every setting and depth."""
    styles = ["-", "--", ":", "-."]
    for fname in ("grad_norms.png", "dead_units.png"):
        fig, axes = new_figure(6.0 * len(cfg.settings), 4.2, ncols=len(cfg.settings))
        axes = [axes] if len(cfg.settings) == 1 else list(axes)
        for ax, setting in zip(axes, cfg.settings, strict=True):
            for d_i, depth in enumerate(cfg.depths):
                style = styles[d_i % len(styles)]
                for act in cfg.activations:
                    s = init[setting][f"depth_{depth}"][act]
                    color, label = _COLORS.get(act, "k"), f"{act}, depth {depth}"
                    if fname == "grad_norms.png":
                        _band(
                            ax,
                            range(1, depth + 1),
                            s["grad_norm_mean"],
                            s["grad_norm_min"],
                            s["grad_norm_max"],
                            color,
                            label,
                            style,
                        )
                    else:
                        _mean_std_band(
                            ax, s["dead_fraction_mean"], s["dead_fraction_std"], color, label, style
                        )
                if fname == "dead_units.png" and setting == "plain" and "relu" in cfg.activations:
                    pred = theory[f"depth_{depth}"]["dead_fraction"]
                    ax.plot(
                        range(1, depth + 1),
                        pred,
                        style,
                        color="k",
                        lw=1,
                        label=f"ReLU theory (∞ width), depth {depth}",
                    )
            if fname == "grad_norms.png":
                ax.set_yscale("log")
                ax.set_ylabel("‖∂L/∂W_l‖: mean, band = min–max over seeds")
            else:
                ax.set_ylim(-0.02, max(0.1, ax.get_ylim()[1]))
                ax.set_ylabel("dead-unit fraction (mean ± std over seeds)")
            weight = "W_l" if setting == "plain" else "W1 of FFN_l"
            ax.set_title(f"{setting} stack at initialisation ({weight})")
            ax.set_xlabel("layer l")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save_figure(fig, out / fname)


def _plot_training(cfg: Config, training: dict, out: Path) -> None:
    """Probe loss and mean dead fraction during training, one column per learning rate."""
    n = len(cfg.train_lrs)
    fig, axes = new_figure(5.0 * n, 7.0, ncols=n, nrows=2)
    axes = axes.reshape(2, n)
    for j, lr in enumerate(cfg.train_lrs):
        for act in cfg.activations:
            t = training[f"lr_{lr:g}"][act]
            color = _COLORS.get(act, "k")
            _band(axes[0, j], t["steps"], t["loss_mean"], t["loss_min"], t["loss_max"], color, act)
            m, s = torch.tensor(t["dead_mean"]), torch.tensor(t["dead_std"])
            _band(axes[1, j], t["steps"], m, m - s, m + s, color, act)
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(f"lr {lr:g}: probe MSE (band = min–max over seeds)")
        axes[1, j].set_title(f"lr {lr:g}: dead-unit fraction, mean over layers (± std)")
        axes[1, j].set_ylim(-0.02, max(0.1, axes[1, j].get_ylim()[1]))
        for ax in axes[:, j]:
            ax.set_xlabel(f"Adam step (plain stack, depth {cfg.depths[0]})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    save_figure(fig, out / "training.png")


def _table(
    cfg: Config, init: dict, training: dict, approx: tuple[float, float], meanfield: dict
) -> str:
    """The study's headline numbers as Markdown tables."""
    lines = [
        f"GELU tanh approximation: max |error| = {approx[0]:.3e} at x = {approx[1]:.3f}",
        "",
        f"At initialisation (width {cfg.width}, batch {cfg.batch}, {cfg.seeds} seeds; "
        "mean ± std over seeds):",
        "",
        "| setting | depth | activation | ‖∂L/∂W_1‖ | ‖∂L/∂W_L‖ | first/last | "
        "dead avg | dead last layer | zero act' entries avg | mean z² at layer L |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in cfg.settings:
        for depth in cfg.depths:
            for act in cfg.activations:
                s = init[setting][f"depth_{depth}"][act]
                zero = sum(s["zero_grad_fraction_mean"]) / depth
                q_last = f"{s['preact_ms_mean'][-1]:.3g}"
                if setting == "plain":
                    q_last += f" (mean-field {meanfield[act][depth - 1]:.3g})"
                lines.append(
                    f"| {setting} | {depth} | {act} | {s['grad_norm_mean'][0]:.3g} | "
                    f"{s['grad_norm_mean'][-1]:.3g} | {s['ratio_first_last_mean']:.3g} ± "
                    f"{s['ratio_first_last_std']:.2g} | {s['dead_fraction_avg']:.3f} | "
                    f"{s['dead_fraction_last_layer']:.3f} | {zero:.3f} | {q_last} |"
                )
    lines += [
        "",
        f"Training the plain depth-{cfg.depths[0]} stack with Adam for {cfg.train_steps} steps "
        f"({cfg.train_seeds} seeds): dead fraction averaged over layers, on the probe batch.",
        "",
        "| lr | activation | dead at step 0 | dead max | dead at end | probe MSE at end |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for lr in cfg.train_lrs:
        for act in cfg.activations:
            t = training[f"lr_{lr:g}"][act]
            lines.append(
                f"| {lr:g} | {act} | {t['dead_mean'][0]:.3f} | {max(t['dead_mean']):.3f} | "
                f"{t['dead_mean'][-1]:.3f} | {t['loss_mean'][-1]:.3g} |"
            )
    return "\n".join(lines) + "\n"


@register(
    "feedforward.gradient_flow",
    Config,
    full={
        "depths": (16, 24),
        "width": 256,
        "batch": 512,
        "seeds": 5,
        "train_steps": 400,
        "train_seeds": 3,
        "log_every": 20,
        "approx_points": 2_000_001,
    },
)
def run(cfg: Config, out: Path) -> dict:
    """GELU vs ReLU in deep FFN stacks: per-layer gradient norms, dead units, training."""
    with torch_threads(cfg.threads):
        return _run(cfg, out)


def _run(cfg: Config, out: Path) -> dict:
    """The body of `run`, at the configured thread count."""
    out = Path(out)
    approx = tanh_approximation_error(cfg.approx_points)
    _plot_activations(out)

    n_init = len(cfg.settings) * len(cfg.depths) * cfg.seeds * len(cfg.activations)
    n_train = len(cfg.train_lrs) * cfg.train_seeds * len(cfg.activations)
    bar = tqdm(total=n_init + n_train, desc="feedforward.gradient_flow", leave=False)

    init: dict = {s: {} for s in cfg.settings}
    theory: dict = {}
    for depth in cfg.depths:
        runs: dict = {(s, a): [] for s in cfg.settings for a in cfg.activations}
        theory_runs = []
        for k in range(cfg.seeds):
            seed = cfg.seed * 10_000 + k
            gen = torch.Generator().manual_seed(seed)
            u = torch.randn(cfg.width, generator=gen) / math.sqrt(cfg.width)
            x, y = teacher_batch(cfg.batch, u, gen)
            theory_runs.append(relu_theory(x, depth))
            for setting in cfg.settings:
                for act in cfg.activations:
                    torch.manual_seed(seed)  # identical weights for every activation (paired)
                    model = Stack(setting, depth, cfg.width, act)
                    runs[setting, act].append(probe(model, x, y, act))
                    bar.update()
        for setting in cfg.settings:
            init[setting][f"depth_{depth}"] = {
                act: _summary(runs[setting, act]) for act in cfg.activations
            }
        theory[f"depth_{depth}"] = {
            key: mean_and_std(torch.tensor([t[key] for t in theory_runs]))[0].tolist()
            for key in ("cosine", "dead_fraction")
        }

    training: dict = {}
    for lr in cfg.train_lrs:
        training[f"lr_{lr:g}"] = {}
        for act in cfg.activations:
            trajs = []
            for k in range(cfg.train_seeds):
                trajs.append(train_trajectory(cfg, cfg.depths[0], act, lr, cfg.seed * 10_000 + k))
                bar.update()
            entry: dict = {"steps": trajs[0]["steps"]}
            for key in ("loss", "dead"):
                values = torch.tensor([t[key] for t in trajs])
                mean, std = mean_and_std(values)
                entry[f"{key}_mean"], entry[f"{key}_std"] = mean.tolist(), std.tolist()
                entry[f"{key}_min"] = values.min(dim=0).values.tolist()
                entry[f"{key}_max"] = values.max(dim=0).values.tolist()
            training[f"lr_{lr:g}"][act] = entry
    bar.close()

    _plot_init(cfg, init, theory, out)
    _plot_training(cfg, training, out)
    meanfield = {
        act: meanfield_second_moments(get_activation(act), max(cfg.depths))
        for act in cfg.activations
    }
    (out / "table.md").write_text(_table(cfg, init, training, approx, meanfield))
    return {
        "tanh_approx_max_abs_error": approx[0],
        "tanh_approx_argmax_x": approx[1],
        "init": init,
        "relu_theory": theory,
        "meanfield_preact_ms": meanfield,
        "training": training,
    }
