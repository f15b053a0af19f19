"""Study ``lowrank.approximation``: how well do low-rank methods reproduce trained attention?

A small character GPT is trained on Tiny Shakespeare, then every layer's attention matrices on
validation windows are approximated at ranks r by three methods (maths and costs:
docs/derivations/low-rank-attention.md):

- truncated SVD of each attention matrix: the Eckart–Young optimum, a floor for any rank-r map;
- Nyström with r segment-mean landmarks (no parameters), with the pseudo-inverse of Xiong et
  al. (6 Newton–Schulz steps, ``nystrom``) and with the exact one (``nystrom_pinv``): the
  truncated iteration acts as a regulariser when the landmark matrix is ill-conditioned;
- Linformer with r projected keys. E, F (r×n, one pair per layer, shared by the heads) are
  fitted by Adam on the relative squared error of each layer's output ``P̄ (F V)`` against the
  exact ``A V`` for the fixed trained model, on fresh training windows every step (fixed
  windows get memorised: E, F have 2rn numbers per layer). Gradient descent, because the best
  E, F for a softmax has no closed form, and the output (not A) is what the model uses;
  E = F = segment means (average pooling, the exact map at r = n) is the start, and the
  iterate kept is the best on a fixed set of other training windows.

Two targets, with the same trained Q, K: the model's causal maps ``softmax(QKᵀ/√d + M)``, and
bidirectional maps ``softmax(QKᵀ/√d)`` (the matrix Nyström and Linformer approximate). A causal
map is lower triangular with a positive diagonal, so it is nonsingular (rank n), however small
d_head is; Nyström and Linformer mix all positions, so on the causal target part of their error
is the mask they cannot express. The loss change replaces the attention of every layer at once
by the approximation of the causal map (reading later positions where the method does so).
Everything after training runs in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from scratchformer.analysis.rank import effective_rank, numerical_rank, stable_rank
from scratchformer.data.lm_text import random_batch
from scratchformer.experiments.kit import (
    CharGPTConfig,
    char_text,
    positive,
    positive_real,
    torch_threads,
    train_char_lm,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.attention import masked_softmax
from scratchformer.functional.contractions import merge_heads_matmul, split_heads_matmul
from scratchformer.functional.lowrank import (
    linformer_attention,
    nystrom_weights,
    relative_frobenius_error,
    segment_means_matrix,
    truncated_svd,
)
from scratchformer.functional.masks import causal_mask
from scratchformer.models.gpt import GPT
from scratchformer.viz.figures import new_figure, save_figure

F64 = torch.float64
METHODS = ("svd", "nystrom", "nystrom_pinv", "linformer")
TARGETS = ("causal", "bidirectional")


@dataclass
class Config(CharGPTConfig):
    """Quick profile: a 2-layer, 4-head char GPT (d_head 16, context 64), 300 steps on the CPU."""

    ranks: tuple[int, ...] = (1, 4, 16, 64)  # each in [1, context_len]
    eval_windows: int = 16  # validation windows for errors, ranks and the loss change
    fit_windows: int = 8  # fixed training windows that pick Linformer's best E, F
    fit_batch: int = 8  # fresh training windows per Linformer fitting step
    fit_steps: int = 60
    fit_lr: float = 0.02
    newton_iters: int = 6  # Newton–Schulz steps of the ``nystrom`` method (Xiong et al.: 6)
    n_heads: int = 4
    steps: int = 300
    eval_every: int = 300
    eval_batches: int = 4
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {"eval_windows": positive, "fit_windows": positive,
                                        "fit_batch": positive, "fit_lr": positive_real}

    def check(self) -> None:
        """Every rank must be one a context_len × context_len attention map can have."""
        super().check()
        if not self.ranks or any(not 1 <= r <= self.context_len for r in self.ranks):
            raise ValueError(f"ranks must be a non-empty tuple of ints in [1, context_len="
                             f"{self.context_len}], got {self.ranks!r}")


FULL = {"text_chars": 0, "n_layers": 3, "d_model": 128, "context_len": 128, "batch_size": 16,
        "steps": 900, "eval_every": 300, "eval_batches": 8, "warmup_steps": 50,
        "ranks": (1, 2, 4, 8, 16, 32, 64, 128), "eval_windows": 24, "fit_windows": 16,
        "fit_steps": 100}


# ----------------------------------------------------------------------------- model replay

Attend = Callable[[int, Tensor, Tensor, Tensor], Tensor]


def _exact_weights(q: Tensor, k: Tensor, causal: bool) -> Tensor:
    """``softmax(QKᵀ/√d [+ causal mask])`` of (B, H, n, e) heads."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), -math.inf)
    return masked_softmax(scores)


@torch.no_grad()
def replay(model: GPT, idx: Tensor, attend: Attend, record: list | None = None) -> Tensor:
    """Logits of ``model`` on ``idx`` with each layer's attention computed by ``attend``.

    ``attend(layer, q, k, v)`` returns the heads (B, H, n, e). The model's pre-norm blocks are
    re-traced from their weights; ``record`` (if given) receives each layer's exact (q, k, v).
    """
    x = model.embed(idx)
    H = model.config.n_heads
    for i, block in enumerate(model.blocks):
        attn, h = block.attn, block.norm1(x)
        qkv = []
        for w, b in ((attn.w_q, attn.b_q), (attn.w_k, attn.b_k), (attn.w_v, attn.b_v)):
            y = split_heads_matmul(h, w, H)
            qkv.append(y if b is None else y + b.view(1, H, 1, -1))
        if record is not None:
            record.append(tuple(qkv))
        out = merge_heads_matmul(attend(i, *qkv), attn.w_o)
        x = x + (out if attn.b_o is None else out + attn.b_o)
        x = x + block.ffn(block.norm2(x))
    return model.logits(model.norm(x))


def _loss(model: GPT, x: Tensor, y: Tensor, attend: Attend) -> float:
    """Mean next-token cross-entropy of the replayed model on ``(x, y)``."""
    logits = replay(model, x, attend)
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   y.reshape(-1)))


# ----------------------------------------------------------------------------- Linformer fit


QKV = list[tuple[Tensor, Tensor, Tensor]]


def _output_error(qkv: QKV, E: Tensor, F: Tensor, causal: bool) -> Tensor:
    """Σ_layers ‖P̄(FV) − AV‖² / ‖AV‖²: Linformer's relative squared output error."""
    total = torch.zeros((), dtype=F64)
    for i, (q, k, v) in enumerate(qkv):
        target = _exact_weights(q, k, causal) @ v
        total = total + ((linformer_attention(q, k, v, E[i], F[i]) - target).square().sum()
                         / target.square().sum())
    return total


def fit_linformer(draw: Callable[[], QKV], held: QKV, rank: int, causal: bool, steps: int,
                  lr: float, check_every: int = 10) -> tuple[Tensor, Tensor, float]:
    """E, F (layers, rank, n) fitted by Adam on fresh training windows from ``draw()``.

    Starts from average pooling; keeps the iterate with the lowest error on the fixed windows
    ``held`` (checked every ``check_every`` steps), so fixed windows cannot be memorised and the
    fit never ends worse than pooling on them. Also returns that error per layer.
    """
    n = held[0][1].shape[-2]
    pool = segment_means_matrix(n, rank, F64)
    E = pool.repeat(len(held), 1, 1).requires_grad_()
    F = pool.repeat(len(held), 1, 1).requires_grad_()
    opt = torch.optim.Adam([E, F], lr=lr)
    with torch.no_grad():
        best = (float(_output_error(held, E, F, causal)), E.detach().clone(), F.detach().clone())
    for step in range(1, steps + 1):
        opt.zero_grad()
        _output_error(draw(), E, F, causal).backward()
        opt.step()
        if step % check_every == 0 or step == steps:
            with torch.no_grad():
                err = float(_output_error(held, E, F, causal))
            if err < best[0]:
                best = (err, E.detach().clone(), F.detach().clone())
    return best[1], best[2], best[0] / len(held)


# ----------------------------------------------------------------------------- measurements


def _approx_matrix(method: str, q: Tensor, k: Tensor, v: Tensor, rank: int, causal: bool,
                   ef: tuple[Tensor, Tensor] | None, newton_iters: int) -> Tensor:
    """The (B, H, n, n) matrix a method puts in place of the attention map."""
    if method == "svd":
        return truncated_svd(_exact_weights(q, k, causal), rank)
    if method == "nystrom":
        return nystrom_weights(q, k, rank, pinv="newton", iters=newton_iters)
    if method == "nystrom_pinv":
        return nystrom_weights(q, k, rank, pinv="exact")
    E, F = ef
    return linformer_attention(q, k, v, E, F, return_matrix=True)[1]


def _approx_attend(method: str, rank: int, ef: tuple[Tensor, Tensor], iters: int) -> Attend:
    """An ``attend`` that applies the method's stand-in for layer i's causal map to V."""

    def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return _approx_matrix(method, q, k, v, rank, True, (ef[0][i], ef[1][i]), iters) @ v

    return attend


def rank_report(qkv: list[tuple[Tensor, Tensor, Tensor]], d_head: int) -> dict:
    """Per layer: ranks of the scores and of the causal and bidirectional maps (means)."""
    layers = []
    for q, k, _ in qkv:
        row = {"scores_numerical_rank_max": int(numerical_rank(q @ k.transpose(-2, -1)).max())}
        for target in TARGETS:
            a = _exact_weights(q, k, target == "causal")
            row[target] = {"numerical_rank_mean": float(numerical_rank(a).double().mean()),
                           "numerical_rank_min": int(numerical_rank(a).min()),
                           "effective_rank_mean": float(effective_rank(a).mean()),
                           "stable_rank_mean": float(stable_rank(a).mean())}
        layers.append(row)
    return {"d_head": d_head, "n": int(qkv[0][0].shape[-2]), "layers": layers}


def _spectra(qkv: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, Tensor]:
    """Mean of σ_i/σ_1 over windows, heads and layers, for each target."""
    out = {}
    for target in TARGETS:
        s = torch.cat([torch.linalg.svdvals(_exact_weights(q, k, target == "causal")).flatten(0, 1)
                       for q, k, _ in qkv])
        out[target] = (s / s[:, :1]).mean(0)
    return out


@register("lowrank.approximation", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Truncated SVD vs Nyström vs Linformer on a trained char GPT's attention maps."""
    with torch_threads(cfg.threads):
        return _run(cfg, out)


def _run(cfg: Config, out: Path) -> dict:
    data = char_text(cfg)
    lm = train_char_lm(cfg, data, log_path=out / "train_log.jsonl")
    model = lm.model.to(F64).eval()
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    x_val, y_val = random_batch(data.val, cfg.eval_windows, cfg.context_len, gen)
    x_fit, _ = random_batch(data.train, cfg.fit_windows, cfg.context_len, gen)

    exact: Attend = lambda i, q, k, v: _exact_weights(q, k, True) @ v  # noqa: E731
    val_qkv: QKV = []
    fit_qkv: QKV = []
    logits = replay(model, x_val, exact, record=val_qkv)
    replay(model, x_fit, exact, record=fit_qkv)
    with torch.no_grad():
        ref_logits = model(x_val)[0]
    base_loss = _loss(model, x_val, y_val, exact)

    def draw() -> QKV:
        record: QKV = []
        replay(model, random_batch(data.train, cfg.fit_batch, cfg.context_len, gen)[0], exact,
               record=record)
        return record

    errors = {t: {m: [] for m in METHODS} for t in TARGETS}
    fit_errors: dict[str, list[float]] = {t: [] for t in TARGETS}
    losses = {m: [] for m in METHODS}
    for r in cfg.ranks:
        fitted = {}
        for t in TARGETS:
            E, F, fit_err = fit_linformer(draw, fit_qkv, r, t == "causal", cfg.fit_steps,
                                          cfg.fit_lr)
            fitted[t] = (E, F)
            fit_errors[t].append(math.sqrt(fit_err))
        for t in TARGETS:
            for m in METHODS:
                errs = [relative_frobenius_error(
                    _approx_matrix(m, q, k, v, r, t == "causal",
                                   (fitted[t][0][i], fitted[t][1][i]), cfg.newton_iters),
                    _exact_weights(q, k, t == "causal")).mean()
                        for i, (q, k, v) in enumerate(val_qkv)]
                errors[t][m].append(float(torch.stack(errs).mean()))
        for m in METHODS:
            losses[m].append(_loss(model, x_val, y_val,
                                   _approx_attend(m, r, fitted["causal"], cfg.newton_iters)))

    ranks = rank_report(val_qkv, cfg.d_model // cfg.n_heads)
    figures = _plot(cfg, errors, losses, base_loss, _spectra(val_qkv), ranks, out)
    return {
        "model": {"parameters": lm.model.num_parameters(), "val_loss_trained": lm.final(),
                  "d_head": ranks["d_head"], "n": cfg.context_len},
        "replay_max_abs_logit_error": float((logits - ref_logits).abs().max()),
        "ranks": list(cfg.ranks),
        "relative_frobenius_error": errors,
        "val_loss_exact": base_loss,
        "val_loss": losses,
        "val_loss_change": {m: [v - base_loss for v in losses[m]] for m in METHODS},
        "attention_rank": ranks,
        "linformer_fit": {"steps": cfg.fit_steps, "lr": cfg.fit_lr, "batch": cfg.fit_batch,
                          "selection_windows": cfg.fit_windows,
                          "init": "segment means (average pooling)",
                          "relative_output_error": fit_errors},
        "figures": figures,
        "config": dataclasses.asdict(cfg),
    }


def _plot(cfg: Config, errors: dict, losses: dict, base: float, spectra: dict[str, Tensor],
          ranks: dict, out: Path) -> list[str]:
    """error_vs_rank.png, loss_vs_rank.png, spectrum.png; returns their names."""
    labels = {"svd": "truncated SVD (optimum)", "nystrom": "Nyström (Newton–Schulz)",
              "nystrom_pinv": "Nyström (exact pinv)", "linformer": "Linformer (fitted E, F)"}
    fig, axes = new_figure(10, 4, ncols=2)
    for ax, t in zip(axes, TARGETS, strict=True):
        for m in METHODS:
            ax.plot(cfg.ranks, errors[t][m], marker="o", label=labels[m])
        ax.axvline(ranks["d_head"], color="grey", ls=":", label="d_head")
        ax.set(xscale="log", yscale="log", xlabel="rank r", title=f"{t} attention maps",
               ylabel="relative Frobenius error")
        ax.legend(fontsize=8)
    save_figure(fig, out / "error_vs_rank.png")

    fig, ax = new_figure()
    for m in METHODS:
        ax.plot(cfg.ranks, [v - base for v in losses[m]], marker="o", label=labels[m])
    ax.axvline(ranks["d_head"], color="grey", ls=":", label="d_head")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set(xscale="log", xlabel="rank r", ylabel=f"val loss change (nats/char; exact {base:.3f})",
           title="all layers' attention replaced")
    ax.legend(fontsize=8)
    save_figure(fig, out / "loss_vs_rank.png")

    fig, ax = new_figure()
    for t in TARGETS:
        s = spectra[t].clamp_min(1e-18)
        ax.plot(range(1, s.numel() + 1), s, label=f"{t}")
    ax.axvline(ranks["d_head"], color="grey", ls=":", label="d_head = rank bound of QKᵀ")
    ax.set(yscale="log", xlabel="index i", ylabel="mean σ_i / σ_1",
           title="singular values of trained attention maps")
    ax.legend(fontsize=8)
    save_figure(fig, out / "spectrum.png")
    return ["error_vs_rank.png", "loss_vs_rank.png", "spectrum.png"]
