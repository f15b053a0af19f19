"""The speed-vs-accuracy section of the report: trade-off points, Pareto fronts, a plot, prose.

A study opts in by putting a ``tradeoff`` block in its metrics::

    {"quality_name": "validation loss (nats/char)", "higher_is_better": false,
     "speed_name": "training tokens/s", "baseline": "dense",
     "points": [{"variant": "dense", "speed": 5100.0, "quality": 1.92}, ...]}

Speed is always higher-is-better; quality says which way it points. A point is on the Pareto
front when no other point of the same study is at least as fast *and* at least as good, and
strictly better in one of the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchformer.viz.figures import new_figure, save_figure

__all__ = ["Tradeoff", "analysis", "collect", "fmt", "pareto_front", "plot_tradeoffs"]


def fmt(x: float) -> str:
    """A number for prose and tables: thousands separators for large values, else 4 digits."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


@dataclass
class Tradeoff:
    """One study's variants as (speed, quality) points and how to read them."""

    study: str
    quality_name: str
    higher_is_better: bool
    speed_name: str
    baseline: str | None
    points: list[dict[str, Any]]  # each: variant, speed, quality (+ optional extras)


def _check_point(study: str, point: Any) -> dict[str, Any]:
    if not isinstance(point, dict) or not {"variant", "speed", "quality"} <= set(point) or (
            not isinstance(point["variant"], str)):
        raise ValueError(f"{study}: a tradeoff point needs variant (a name), speed and quality, "
                         f"got {point!r}")
    for key in ("speed", "quality"):
        value = point[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise ValueError(f"{study}: tradeoff point {point['variant']!r} has a non-finite "
                             f"{key} {value!r}")
    return point


def collect(records: list[dict]) -> list[Tradeoff]:
    """The ``tradeoff`` blocks of the study records that have one, checked."""
    found = []
    for r in records:
        block = r.get("metrics", {}).get("tradeoff")
        if not block:
            continue
        if not isinstance(block, dict) or not isinstance(block.get("points", []), list):
            raise ValueError(f"{r['study']}: the tradeoff block must be an object with a list "
                             f"of points")
        points = [_check_point(r["study"], p) for p in block.get("points", [])]
        if points:
            found.append(Tradeoff(r["study"], block.get("quality_name", "quality"),
                                  bool(block.get("higher_is_better", True)),
                                  block.get("speed_name", "tokens/s"), block.get("baseline"),
                                  points))
    return found


def pareto_front(points: list[dict[str, Any]], higher_is_better: bool) -> list[str]:
    """Variants that no other point dominates (faster-or-equal and better-or-equal, one strict)."""
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for p in points:
        q = sign * p["quality"]
        dominated = any(
            o is not p and o["speed"] >= p["speed"] and sign * o["quality"] >= q
            and (o["speed"] > p["speed"] or sign * o["quality"] > q)
            for o in points)
        if not dominated:
            front.append(p["variant"])
    return front


def plot_tradeoffs(tradeoffs: list[Tradeoff], path: Path) -> Path:
    """One panel per study: quality against speed, the Pareto front joined by a line."""
    fig, axes = new_figure(4.6 * len(tradeoffs), 3.8, ncols=len(tradeoffs))
    axes = [axes] if len(tradeoffs) == 1 else list(axes)
    for ax, t in zip(axes, tradeoffs, strict=True):
        front = set(pareto_front(t.points, t.higher_is_better))
        for p in t.points:
            on = p["variant"] in front
            ax.scatter(p["speed"], p["quality"], s=50 if on else 30,
                       color="C3" if on else "C0", zorder=3)
            ax.annotate(p["variant"], (p["speed"], p["quality"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        line = sorted((p for p in t.points if p["variant"] in front), key=lambda p: p["speed"])
        ax.plot([p["speed"] for p in line], [p["quality"] for p in line], color="C3", lw=1,
                label="Pareto front")
        ax.set_xlabel(t.speed_name)
        ax.set_ylabel(t.quality_name + ("" if t.higher_is_better else " (lower is better)"))
        ax.set_title(t.study, fontsize=10)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def analysis(t: Tradeoff) -> list[str]:
    """Sentences comparing every variant with the baseline, citing the measured numbers."""
    base = next((p for p in t.points if p["variant"] == t.baseline), None)
    front = pareto_front(t.points, t.higher_is_better)
    lines = []
    if base is not None:
        for p in t.points:
            if p is base:
                continue
            speedup = p["speed"] / base["speed"] if base["speed"] else float("nan")
            delta = p["quality"] - base["quality"]
            better = delta > 0 if t.higher_is_better else delta < 0
            verdict = "better" if better else ("equal" if delta == 0 else "worse")
            lines.append(
                f"- **{p['variant']}** runs at {speedup:.2f}× the speed of {t.baseline} "
                f"({fmt(p['speed'])} vs {fmt(base['speed'])} {t.speed_name}) with "
                f"{t.quality_name} {fmt(p['quality'])} vs {fmt(base['quality'])} "
                f"({delta:+.4g}, {verdict}).")
    best = max(t.points, key=lambda p: p["quality"] if t.higher_is_better else -p["quality"])
    fastest = max(t.points, key=lambda p: p["speed"])
    lines.append(f"- Best {t.quality_name}: **{best['variant']}** ({fmt(best['quality'])}); "
                 f"fastest: **{fastest['variant']}** ({fmt(fastest['speed'])} {t.speed_name}).")
    lines.append(f"- Pareto front (no variant is both faster and better): {', '.join(front)}.")
    return lines
