"""Figures of the code language-model study: bits/byte against training compute, and bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from scratchformer.viz.figures import new_figure, save_figure

__all__ = ["plot_bits_per_byte", "plot_compute_curves"]


def plot_compute_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                        references: Mapping[str, float], path: Path,
                        offsets: Mapping[str, float] | None = None) -> Path:
    """Validation bits/byte against training tokens (millions), one line per run; dashed
    copies shifted right by ``offsets`` (e.g. the pretraining tokens of a fine-tuned run);
    horizontal lines for ``references`` (baselines)."""
    fig, ax = new_figure(7.0, 4.2)
    for name, (tokens, bpb) in curves.items():
        (line,) = ax.plot([t / 1e6 for t in tokens], bpb, marker="o", ms=3, label=name)
        if offsets and name in offsets:
            ax.plot([(t + offsets[name]) / 1e6 for t in tokens], bpb, ls="--", lw=1,
                    color=line.get_color(), label=f"{name} (+ pretraining tokens)")
    for i, (name, value) in enumerate(references.items()):
        ax.axhline(value, color=f"C{len(curves) + i + 1}", ls=":", lw=1.2, label=name)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("held-out Python files, bits per UTF-8 byte", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_bits_per_byte(values: Mapping[str, float], path: Path,
                       title: str = "held-out test files") -> Path:
    """Horizontal bars of bits/byte, lowest at the top."""
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)
    fig, ax = new_figure(7.0, 0.35 * len(items) + 1.2)
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    for y, (_, v) in enumerate(items):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel("bits per byte (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(v for _, v in items) * 1.15)
    return save_figure(fig, path)
