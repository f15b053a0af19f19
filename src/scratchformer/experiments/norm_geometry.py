r"""Study ``norm.geometry``: LayerNorm and RMSNorm in three dimensions, drawn and checked.

For $d = 3$ the geometry of docs/derivations/layernorm-geometry.md can be seen whole. LayerNorm
(before its affine map) first removes each point's component along $\mathbf 1/\sqrt3$, which
lands it in the plane $x + y + z = 0$, then rescales it to length $\sqrt3$ (up to ``eps``), so
every output lies on the circle of radius $\sqrt3$ in that plane. RMSNorm skips the centring and
puts every output on the sphere of radius $\sqrt3$. The figure shows random points, their
projections onto the plane and their LayerNorm outputs on the circle (left), and their RMSNorm
outputs on the sphere (right). The metrics give the largest distance of the LayerNorm outputs
from the plane and from the circle, and of the RMSNorm outputs from the sphere, next to the
bound that ``eps`` implies: $\sqrt d\,(1 - \sqrt{v/(v + \varepsilon)})$ for a point of
(biased) variance $v$, and $\sqrt d\,(1 - \sqrt{m/(m + \varepsilon)})$ for mean square $m$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from scratchformer.experiments.kit import StudyConfig, positive, positive_real
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.normalization import layer_norm, rms_norm
from scratchformer.viz.figures import save_figure


@dataclass
class Config(StudyConfig):
    """Random Gaussian points in 3-d; ``eps`` of both norms (0 = exact geometry)."""

    n_points: int = 40
    scale: float = 1.5  # standard deviation of the points' coordinates
    eps: float = 1e-5

    RULES: ClassVar[dict[str, Rule]] = {"n_points": positive, "scale": positive_real}

    def check(self) -> None:
        super().check()
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")


def project_off_ones(x: Tensor) -> Tensor:
    """``x − (x·u)u`` with ``u = 1/√d``: the orthogonal projection onto the plane Σᵢ xᵢ = 0."""
    return x - x.mean(dim=-1, keepdim=True)


def geometry_errors(x: Tensor, eps: float) -> dict[str, float]:
    """Largest deviations of LN(x) from the plane and the √d sphere, of RMSNorm(x) from the
    sphere, and the deviations from the radius that ``eps`` allows (float64)."""
    x = x.double()
    d = x.shape[-1]
    ln, rms = layer_norm(x, eps=eps), rms_norm(x, eps=eps)
    var = project_off_ones(x).square().mean(-1)
    mean_sq = x.square().mean(-1)
    return {
        "ln_max_plane_deviation": float((ln.sum(-1) / math.sqrt(d)).abs().max()),
        "ln_max_radius_deviation": float((ln.norm(dim=-1) - math.sqrt(d)).abs().max()),
        "ln_radius_bound_from_eps": float((math.sqrt(d) * (1 - (var / (var + eps)).sqrt())).max()),
        "rms_max_radius_deviation": float((rms.norm(dim=-1) - math.sqrt(d)).abs().max()),
        "rms_radius_bound_from_eps": float(
            (math.sqrt(d) * (1 - (mean_sq / (mean_sq + eps)).sqrt())).max()),
    }


@register("norm.geometry", Config)
def run(cfg: Config, out: Path) -> dict:
    """LayerNorm in 3-d: points, their projection on x+y+z=0, outputs on the circle of radius √3."""
    gen = torch.Generator().manual_seed(cfg.seed)
    x = cfg.scale * torch.randn(cfg.n_points, 3, generator=gen, dtype=torch.float64)
    metrics = geometry_errors(x, cfg.eps)
    _plot(x, cfg.eps, out)
    return {"d": 3, "radius": math.sqrt(3), **metrics}


def _plot(x: Tensor, eps: float, out: Path) -> Path:
    """Left: points, projections, LN outputs and the circle; right: RMSNorm on the sphere."""
    import matplotlib.pyplot as plt  # after viz.figures has chosen the headless backend

    r = math.sqrt(3)
    proj = project_off_ones(x).numpy()
    ln = layer_norm(x, eps=eps).numpy()
    rms = rms_norm(x, eps=eps).numpy()
    pts = x.numpy()
    fig = plt.figure(figsize=(11.0, 5.2), constrained_layout=True)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    # an orthonormal basis (a, b) of the plane x + y + z = 0 draws the circle and the plane
    a = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    b = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)
    t = np.linspace(0, 2 * np.pi, 200)
    circle = r * (np.outer(np.cos(t), a) + np.outer(np.sin(t), b))
    lim = float(np.abs(pts).max())
    s = np.linspace(-1.0, 1.0, 2) * lim
    grid = np.einsum("ij,k->ijk", np.meshgrid(s, s)[0], a) + np.einsum(
        "ij,k->ijk", np.meshgrid(s, s)[1], b)
    ax.plot_surface(grid[..., 0], grid[..., 1], grid[..., 2], alpha=0.12, color="tab:blue")
    ax.plot(*circle.T, color="tab:red", lw=1.5, label="circle of radius √3")
    ax.scatter(*pts.T, s=10, color="gray", label="x")
    ax.scatter(*proj.T, s=10, color="tab:blue", label="x − mean(x)·1 (in the plane)")
    ax.scatter(*ln.T, s=14, color="tab:red", label="LayerNorm(x)")
    for p, q, y in zip(pts, proj, ln, strict=True):
        ax.plot(*np.stack([p, q]).T, color="gray", lw=0.4)
        ax.plot(*np.stack([q, y]).T, color="tab:blue", lw=0.4, ls=":")
    ax.quiver(0, 0, 0, r, r, r, color="black", lw=1, arrow_length_ratio=0.1)
    ax.text(r, r, r, "1", fontsize=9)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
    ax.view_init(elev=15, azim=10)  # near the normal 1, so the plane is seen face-on, tilted
    ax.set_title("LayerNorm: centre (project on x+y+z=0), then scale to √3", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 30), np.linspace(0, np.pi, 15))
    ax2.plot_wireframe(r * np.cos(u) * np.sin(v), r * np.sin(u) * np.sin(v), r * np.cos(v),
                       color="tab:green", lw=0.3, alpha=0.5)
    ax2.scatter(*rms.T, s=14, color="tab:green", label="RMSNorm(x) on the sphere of radius √3")
    ax2.set_title("RMSNorm: no centring, only the √3 sphere", fontsize=9)
    ax2.legend(fontsize=7, loc="upper left")
    for axis in (ax, ax2):
        axis.set_box_aspect((1, 1, 1))
        axis.set_xlabel("x")
        axis.set_ylabel("y")
        axis.set_zlabel("z")
    return save_figure(fig, out / "layernorm_3d.png")
