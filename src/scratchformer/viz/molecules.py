"""Figures of the molecule study: parity plots, atoms shaded by attention, distance biases."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scratchformer.viz.figures import new_figure, save_figure

__all__ = ["draw_attention", "plot_attention_examples", "plot_distance_bias", "plot_parity"]


def draw_attention(smiles: str, weights: Sequence[float], size: int = 360,
                   legend: str = "") -> bytes:
    """PNG bytes of the molecule drawn by RDKit with atom ``i`` shaded by ``weights[i]``
    (scaled to the largest weight; white = none, red = the most attended atom)."""
    from matplotlib import colormaps
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"SMILES {smiles!r} could not be parsed by RDKit")
    w = np.asarray(weights, dtype=float)
    if w.shape != (mol.GetNumAtoms(),):
        raise ValueError(f"weights must have one value per heavy atom ({mol.GetNumAtoms()}), "
                         f"got shape {w.shape}")
    scaled = w / w.max() if w.max() > 0 else w
    cmap = colormaps["Reds"]
    colors = {i: tuple(float(c) for c in cmap(0.05 + 0.75 * s)[:3])
              for i, s in enumerate(scaled)}
    radii = {i: 0.45 for i in colors}
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    drawer.drawOptions().addAtomIndices = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol, legend=legend,
                                       highlightAtoms=list(colors),
                                       highlightAtomColors=colors, highlightAtomRadii=radii,
                                       highlightBonds=[])
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def _png_array(png: bytes) -> np.ndarray:
    """Decode PNG bytes to an image array for matplotlib."""
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


def plot_attention_examples(items: Sequence[tuple[str, Sequence[float], str]], path: Path
                            ) -> Path:
    """A row of molecules ``(smiles, atom weights, title)`` shaded by attention."""
    fig, axes = new_figure(3.2 * len(items), 3.5, ncols=len(items))
    axes = np.atleast_1d(axes)
    for ax, (smi, w, title) in zip(axes, items, strict=True):
        ax.imshow(_png_array(draw_attention(smi, w, size=300)))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("read-out token's attention (last layer, mean over heads)", fontsize=9)
    return save_figure(fig, path, dpi=90)


def plot_parity(panels: Sequence[tuple[str, np.ndarray, np.ndarray, str]], path: Path,
                ncols: int = 2) -> Path:
    """Predicted vs measured scatter per panel ``(title, truth, prediction, unit)``."""
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = new_figure(3.4 * ncols, 3.2 * nrows, ncols=ncols, nrows=nrows)
    axes = np.asarray(axes).reshape(-1)
    for ax, (title, y, p, unit) in zip(axes, panels, strict=False):
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.7)
        ax.scatter(y, p, s=6, alpha=0.6)
        rmse = float(np.sqrt(np.mean((y - p) ** 2)))
        ax.set_title(f"{title}: RMSE {rmse:.3f}", fontsize=8)
        ax.set_xlabel(f"measured ({unit})", fontsize=7)
        ax.set_ylabel("predicted", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(panels):]:
        ax.axis("off")
    return save_figure(fig, path, dpi=80)


def plot_distance_bias(biases: dict[str, np.ndarray], max_distance: int, path: Path) -> Path:
    """Learned spatial bias per head against shortest-path distance, one panel per model;
    ``biases[name]`` is (max_distance + 2, heads), the last row the "other fragment" value."""
    fig, axes = new_figure(3.6 * len(biases), 3.0, ncols=len(biases))
    axes = np.atleast_1d(axes)
    d = np.arange(max_distance + 1)
    for ax, (name, b) in zip(axes, biases.items(), strict=True):
        for h in range(b.shape[1]):
            line, = ax.plot(d, b[:max_distance + 1, h], marker="o", ms=2, lw=1,
                            label=f"head {h}")
            ax.scatter([max_distance + 1.5], [b[-1, h]], marker="x", color=line.get_color())
        ax.set_xticks([*d[::2], max_distance + 1.5],
                      [*(str(v) for v in d[::2]), "frag."], fontsize=6)
        ax.set_xlabel(f"shortest-path distance (>= {max_distance} shared)", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].set_ylabel("bias added to the scores")
    axes[0].legend(fontsize=6)
    return save_figure(fig, path, dpi=90)
