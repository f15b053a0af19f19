"""Probes of a GPT trained on arithmetic: operand-alignment scores and figures of its spectra.

Attention maps, QKᵀ ranks and embedding spectra are properties of the trained model (the ranks
and spectra recorded during training by `SpectrumTracker`); this module measures and draws them,
so the training code does neither.

**Alignment score.** A GPT predicts the token at string index ``j`` from the query at position
``j - 1``. For every answer digit of place value ``p`` (units ``p = 0``), the *aligned keys* are
the digits of place value ``p`` in the two operands (one or two of them; an answer digit with
none, like the leading 1 of ``999+1=1000``, is skipped). A head's score is the attention mass
that those queries put on their aligned keys, averaged over answer digits and problems. Chance is
the mass uniform attention over the ``j`` visible positions would give: ``#aligned / j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scratchformer.data.arithmetic import parse_problem
from scratchformer.viz.figures import new_figure, save_figure

__all__ = [
    "aligned_positions",
    "alignment_scores",
    "plot_embedding_spectrum",
    "plot_qk_ranks",
]


def _digit_places(start: int, text: str) -> dict[int, int]:
    """``{place value: string index}`` of the digits of number ``text`` placed at ``start``."""
    first = start + (1 if text.startswith("-") else 0)
    end = start + len(text)
    return {end - 1 - i: i for i in range(first, end)}


def aligned_positions(problem: str) -> list[tuple[int, tuple[int, ...]]]:
    """``[(query position, aligned operand-digit positions), ...]``, one per scored answer digit.

    E.g. ``'12+345=357$'``: the answer's hundreds digit (index 7) is predicted at query 6 and
    aligned with the '3' at index 3 only (12 has no hundreds digit) -> ``(6, (3,))``.
    """
    a, _, b, answer, _ = parse_problem(problem)
    if answer is None:
        raise ValueError(f"problem must contain its answer, got {problem!r}")
    sa, sb, sc = str(a), str(b), str(answer)
    a_places = _digit_places(0, sa)
    b_places = _digit_places(len(sa) + 1, sb)
    c_places = _digit_places(len(sa) + len(sb) + 2, sc)
    items = []
    for p, j in sorted(c_places.items(), key=lambda kv: kv[1]):
        keys = tuple(pos for pos in (a_places.get(p), b_places.get(p)) if pos is not None)
        if keys:
            items.append((j - 1, keys))
    return items


def _stack(maps: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-layer [(N, H, T, T)] * L, or an (L, N, H, T, T) tensor -> (L, N, H, T, T)."""
    if isinstance(maps, Tensor):
        stacked = maps
    else:
        if isinstance(maps, (str, bytes)) or not isinstance(maps, Sequence) or not maps:
            raise TypeError("maps must be a tensor or a non-empty list of (N, H, T, T) tensors")
        stacked = torch.stack(list(maps))
    if stacked.ndim != 5 or stacked.shape[-1] != stacked.shape[-2]:
        raise ValueError(f"maps must be (L, N, H, T, T) or L x (N, H, T, T), got {stacked.shape}")
    return stacked.detach().float()


def alignment_scores(maps: Sequence[Tensor] | Tensor, problems: Sequence[str]) -> dict:
    """Attention mass from answer-digit queries to same-place operand digits, per layer/head.

    ``maps[l][n]`` is layer ``l``'s (H, T, T) attention on ``problems[n]`` (placed at position
    0, padded on the right). Returns ``scores`` (L, H) numpy array, ``chance`` (uniform
    attention's score), ``best`` ``(layer, head)``, ``best_score`` and ``n_items``.
    """
    a = _stack(maps)
    N, T = a.shape[1], a.shape[-1]
    if isinstance(problems, str) or not isinstance(problems, Sequence):
        raise TypeError(f"problems must be a sequence of str, got {type(problems).__name__}")
    if len(problems) != N:
        raise ValueError(f"maps hold {N} examples but problems has {len(problems)}")
    rows, queries, masks, chance = [], [], [], []
    for n, problem in enumerate(problems):
        for q, keys in aligned_positions(problem):
            if q >= T:
                raise ValueError(f"problem {problem!r} needs position {q}, maps have T={T}")
            mask = torch.zeros(T)
            mask[list(keys)] = 1.0
            rows.append(n)
            queries.append(q)
            masks.append(mask)
            chance.append(len(keys) / (q + 1))
    if not rows:
        raise ValueError("no answer digit has an aligned operand digit in these problems")
    picked = a[:, rows, :, queries, :]  # advanced indices first: (items, L, H, T)
    mass = (picked * torch.stack(masks).to(a.device)[:, None, None, :]).sum(-1).mean(0)
    scores = mass.cpu().numpy()
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return {
        "scores": scores,
        "chance": float(np.mean(chance)),
        "best": (int(best[0]), int(best[1])),
        "best_score": float(scores[best]),
        "n_items": len(rows),
    }


def plot_qk_ranks(tracked: dict, out: Path, name: str = "qk_rank.png") -> Path:
    """Numerical, effective and stable rank of each head's W_Q W_Kᵀ against training step.

    ``tracked`` is `SpectrumTracker.as_dict()`. One panel per layer, one colour per head; the
    d_head bound is a dashed line and the numerical-rank tolerance is printed in the title.
    """
    steps = np.asarray(tracked["steps"])
    qk = {k: np.asarray(v) for k, v in tracked["qk"].items()}
    d_head = tracked["d_head"]
    _, L, H = qk["numerical_rank"].shape
    fig, axes = new_figure(3.2 * L + 0.4, 3.4, ncols=L)
    axes = np.atleast_1d(axes)
    colors = [f"C{h}" for h in range(H)]
    rel_tol = qk["rank_tolerance"] / qk["sigma_max"]
    for l, ax in enumerate(axes):
        for h in range(H):
            ax.plot(steps, qk["numerical_rank"][:, l, h], color=colors[h], lw=2.5, alpha=0.35)
            ax.plot(steps, qk["effective_rank"][:, l, h], color=colors[h], lw=1.3)
            ax.plot(steps, qk["stable_rank"][:, l, h], color=colors[h], lw=1.3, ls=":")
        ax.axhline(d_head, color="black", ls="--", lw=1)
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, d_head * 1.1)
    axes[0].set_ylabel("rank of $W_Q^h W_K^{h\\top}$")
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], color="gray", lw=2.5, alpha=0.35, label="numerical rank"),
              Line2D([], [], color="gray", lw=1.3, label="effective rank"),
              Line2D([], [], color="gray", lw=1.3, ls=":", label="stable rank"),
              Line2D([], [], color="black", ls="--", lw=1, label=f"d_head = {d_head}")]
    legend += [Line2D([], [], color=colors[h], lw=2, label=f"head {h}") for h in range(H)]
    fig.legend(handles=legend, fontsize=7, loc="outside right upper")
    pinned = bool((qk["numerical_rank"] == d_head).all())
    note = "; numerical rank = d_head for every head at every step" if pinned else ""
    fig.suptitle(f"QKᵀ rank per head (float64 SVD; numerical-rank tolerance "
                 f"max(m,n)·eps·σ₁ ≤ {rel_tol.max():.2g}·σ₁{note})", fontsize=9)
    return save_figure(fig, out / name)


def plot_embedding_spectrum(tracked: dict, out: Path,
                            name: str = "embedding_spectrum.png") -> Path:
    """Singular values of the token embedding, one line per recorded step (colour = step)."""
    import matplotlib as mpl

    steps = np.asarray(tracked["steps"])
    sv = np.asarray(tracked["embedding_sv"])
    fig, (ax, ax_norm) = new_figure(9.0, 3.5, ncols=2)
    norm = mpl.colors.Normalize(vmin=steps.min(), vmax=max(steps.max(), steps.min() + 1))
    cmap = mpl.colormaps["viridis"]
    index = np.arange(1, sv.shape[1] + 1)
    for s, row in zip(steps, sv, strict=True):
        ax.plot(index, row, color=cmap(norm(s)), lw=1)
        ax_norm.plot(index, row / row[0], color=cmap(norm(s)), lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i of the token embedding")
    ax_norm.set_yscale("log")
    ax_norm.set_xlabel("index i")
    ax_norm.set_ylabel("σ_i / σ_1")
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=[ax, ax_norm], label="step")
    fig.suptitle(f"token-embedding spectrum during training ({sv.shape[1]} singular values)",
                 fontsize=9)
    return save_figure(fig, out / name)
