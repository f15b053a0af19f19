"""A forecast figure: the recent history, the median forecast and its 10-90% band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scratchformer.viz.figures import new_figure, save_figure

__all__ = ["plot_forecast"]


def plot_forecast(history: np.ndarray, median: np.ndarray, low: np.ndarray, high: np.ndarray,
                  path: Path, title: str = "", shown: int | None = None) -> Path:
    """PNG at ``path``: the last ``shown`` history values (default 3 horizons), the median and
    the band between ``low`` and ``high``, with time 0 at the first forecast step."""
    history = np.asarray(history, dtype=float)
    horizon = len(median)
    shown = min(len(history), 3 * horizon if shown is None else shown)
    fig, ax = new_figure(8.0, 3.4)
    ax.plot(np.arange(-shown, 0), history[-shown:], color="black", lw=0.9, label="history")
    steps = np.arange(horizon)
    ax.fill_between(steps, low, high, color="C0", alpha=0.3, label="10-90% (80% band)")
    ax.plot(steps, median, color="C0", lw=1.2, label="median")
    ax.axvline(-0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("steps from the end of the series")
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
