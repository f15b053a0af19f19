"""Small helpers so every study saves figures the same way, headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def new_figure(width: float = 6.0, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A figure and its axes at a readable size."""
    return plt.subplots(nrows, ncols, figsize=(width, height), constrained_layout=True)


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (PNG), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
