"""Attention heatmaps: one panel per (layer, head), queries down, keys across, tokens as ticks."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from scratchformer.viz.figures import new_figure

__all__ = ["alignment_figure", "attention_grid", "stack_maps"]


def stack_maps(maps: Sequence[Tensor] | Tensor, index: int = 0) -> np.ndarray:
    """Example ``index`` of per-layer maps [(B, H, T, T)] * L, or of (L, B, H, T, T): (L, H, T, T).

    An (L, H, T, T) array (one example already picked) is returned as is.
    """
    if isinstance(maps, Tensor):
        if maps.ndim == 4:
            return maps.detach().float().cpu().numpy()
        if maps.ndim != 5:
            raise ValueError(f"maps must be (L, B, H, T, T) or (L, H, T, T), got {maps.shape}")
        return maps[:, index].detach().float().cpu().numpy()
    if isinstance(maps, (str, bytes)) or not isinstance(maps, Sequence) or not maps:
        raise TypeError("maps must be a tensor or a non-empty list of (B, H, T, T) tensors")
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"per-layer maps must all be (B, H, T, T), got shapes {sorted(shapes)}")
    return torch.stack([m[index] for m in maps]).detach().float().cpu().numpy()


def attention_grid(
    maps: np.ndarray | Tensor,
    tokens: Sequence[str],
    *,
    title: str | None = None,
    highlight: Collection[tuple[int, int]] = (),
    marks: Collection[tuple[int, int]] = (),
    cell: float = 1.9,
):
    """Figure of an (L, H, T, T) attention tensor: row ``l``, column ``h`` is layer l's head h.

    Only the first ``len(tokens)`` positions are drawn (padding is cut off). Panels in
    ``highlight`` (``(layer, head)`` pairs) get a red frame and title; ``marks`` are
    ``(query, key)`` cells outlined in every panel (e.g. the aligned operand digits).
    Returns the figure (save it with `scratchformer.viz.figures.save_figure`).
    """
    a = maps.detach().float().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"maps must have shape (L, H, T, T), got {a.shape}")
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"tokens must be a sequence of str, got {type(tokens).__name__}")
    n = len(tokens)
    if not 1 <= n <= a.shape[-1]:
        raise ValueError(f"tokens must have 1..{a.shape[-1]} entries (T), got {n}")
    L, H = a.shape[:2]
    fig, axes = new_figure(cell * H + 0.8, cell * L + 0.6, ncols=H, nrows=L)
    axes = np.asarray(axes).reshape(L, H)
    image = None
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            image = ax.imshow(a[l, h, :n, :n], vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_xticks(range(n), tokens, fontsize=7)
            ax.set_yticks(range(n), tokens, fontsize=7)
            for q, k in marks:
                if q < n and k < n:
                    ax.add_patch(_cell_outline(q, k))
            hot = (l, h) in highlight
            ax.set_title(f"L{l} H{h}" + (" *" if hot else ""), fontsize=8,
                         color="red" if hot else "black")
            if hot:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(2.0)
    axes[-1, 0].set_xlabel("key (attended to)", fontsize=8)
    axes[-1, 0].set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def alignment_figure(p2h: np.ndarray | Tensor, h2p: np.ndarray | Tensor, premise: Sequence[str],
                     hypothesis: Sequence[str], *, title: str | None = None):
    """Two heatmaps of a sentence pair's soft alignment: each premise word's weights over the
    hypothesis words (Lp, Lh) and each hypothesis word's over the premise (Lh, Lp)."""
    a, b = (x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
            for x in (p2h, h2p))
    lp, lh = len(premise), len(hypothesis)
    if a.shape != (lp, lh) or b.shape != (lh, lp):
        raise ValueError(f"alignments must be ({lp}, {lh}) and ({lh}, {lp}) for the given "
                         f"words, got {a.shape} and {b.shape}")
    fig, axes = new_figure(0.45 * (lh + lp) + 3.0, 0.45 * max(lp, lh) + 1.6, ncols=2)
    panels = ((a, premise, hypothesis, "premise word → hypothesis"),
              (b, hypothesis, premise, "hypothesis word → premise"))
    image = None
    for ax, (w, rows, cols, name) in zip(axes, panels, strict=True):
        image = ax.imshow(w, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.7, label="alignment weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _cell_outline(q: int, k: int):
    """A white square around heatmap cell (row q, column k)."""
    from matplotlib.patches import Rectangle

    return Rectangle((k - 0.5, q - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.2)
