"""Study ``positional.encoding``: the sinusoidal table, its shift structure and its spectrum.

Checks numerically what docs/derivations/positional-encoding.md proves (``PE(p+k) = R(k) PE(p)``,
``PE(p) . PE(q)`` depends only on ``p - q``, so the Gram matrix is Toeplitz), then measures how
many directions the encoding really uses over a window of positions, compared with the
resolution estimate :func:`resolution_rank_estimate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from tqdm import tqdm

from scratchformer.analysis.spectra import (
    cumulative_energy,
    energy_rank,
    entropy_effective_rank,
    gram_eigenvalues,
    numerical_rank,
    participation_ratio,
    toeplitz_deviation,
)
from scratchformer.experiments.kit import StudyConfig, at_least, positive, positive_real
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.functional.positional import (
    positional_frequencies,
    rotation_matrix,
    sinusoidal_positional_encoding,
)
from scratchformer.viz.figures import new_figure, save_figure

F64 = torch.float64


@dataclass
class Config(StudyConfig):
    """Quick profile: one 128-dim encoding, a 256-position window, a small sweep."""

    num_positions: int = 101  # positions 0 .. num_positions-1 in the heatmap; max shift in plots
    dim: int = 128
    base: float = 10000.0
    gram_positions: int = 256  # window for the Gram matrix, Toeplitz check and spectrum
    sweep_dims: tuple[int, ...] = (16, 64, 128)
    sweep_positions: tuple[int, ...] = (101, 256)

    # Two positions at least, to compare them.
    RULES: ClassVar[dict[str, Rule]] = {"num_positions": at_least(2),
                                        "gram_positions": at_least(2), "dim": positive,
                                        "base": positive_real}


def resolution_rank_estimate(num_positions: int, dim: int, base: float = 10000.0) -> float:
    """Heuristic count of directions ``PE`` uses over ``num_positions`` positions.

    Pairs whose frequency gap to the next pair exceeds the window's resolution ``2 pi / N`` give
    2 directions each; the rest crowd a band ``[0, w*]`` that holds about ``N w* / pi`` (Slepian).
    """
    omega = positional_frequencies(dim, base, dtype=F64)
    ratio = base ** (-2.0 / dim)  # omega_{i+1} / omega_i
    w_star = 2 * math.pi / (num_positions * (1.0 - ratio))  # below this, neighbours blur
    resolved = int((omega >= w_star).sum())
    crowded = dim // 2 - resolved
    band = min(w_star, float(omega[0])) * num_positions / math.pi
    return 2 * resolved + min(2 * crowded, band)


def _shifts(n: int) -> list[int]:
    """A spread of shifts in ``(-n, n)``: +-1, +-2, +-3, powers of two and the extremes."""
    pos = {1, 2, 3, n - 1} | {2**j for j in range(2, max(2, n.bit_length()))}
    pos = {k for k in pos if 0 < k < n}
    return sorted(pos | {-k for k in pos} | {0})


def rotation_error(pe: Tensor, dim: int, base: float) -> float:
    """Max over shifts ``k`` and positions ``p`` of ``|PE(p+k) - R(k) PE(p)|`` (float64 table)."""
    n = pe.shape[0]
    worst = 0.0
    for k in _shifts(n):
        R = rotation_matrix(k, dim, base, dtype=F64, device=pe.device)
        lo, hi = max(0, -k), n - max(0, k)  # p and p + k both inside the table
        worst = max(worst, float((pe[lo + k : hi + k] - pe[lo:hi] @ R.T).abs().max()))
    return worst


def closed_form_gram(
    num_positions: int, dim: int, base: float, device: torch.device | str | None = None
) -> Tensor:
    """``G[p, q] = g(p - q)`` with ``g(k) = sum_i cos(omega_i k)``, in float64.

    ``g`` is evaluated once per difference ``k`` in ``(-N, N)`` and then indexed by ``p - q``.
    """
    omega = positional_frequencies(dim, base, dtype=F64, device=device)
    ks = torch.arange(-(num_positions - 1), num_positions, device=device)
    g = torch.cos(ks.to(F64)[:, None] * omega).sum(-1)
    p = torch.arange(num_positions, device=device)
    return g[p[:, None] - p[None, :] + num_positions - 1]


def spectrum_summary(pe: Tensor, base: float) -> dict:
    """Toeplitz, closed-form and rotation errors plus the effective-rank numbers of ``pe``."""
    n, dim = pe.shape
    gram = pe @ pe.T
    lam = gram_eigenvalues(pe)
    return {
        "num_positions": n,
        "dim": dim,
        "toeplitz_max_deviation": toeplitz_deviation(gram),
        "closed_form_max_error": float(
            (gram - closed_form_gram(n, dim, base, pe.device)).abs().max()
        ),
        "rotation_max_error": rotation_error(pe, dim, base),
        "energy_rank_99": energy_rank(lam, 0.99),
        "energy_rank_999": energy_rank(lam, 0.999),
        "participation_ratio": participation_ratio(lam),
        "entropy_effective_rank": entropy_effective_rank(lam),
        "numerical_rank": numerical_rank(pe),
        "resolution_estimate": resolution_rank_estimate(n, dim, base),
        "top_eigenvalue_fraction": float(lam[0] / lam.sum()),
    }


def _plot_pe(pe: Tensor, out: Path) -> None:
    """Heatmap of the table: positions down, dimensions across."""
    fig, ax = new_figure(7, 4.5)
    im = ax.imshow(pe.cpu().numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="upper")
    ax.set_xlabel("dimension (even: sin, odd: cos; frequency falls to the right)")
    ax.set_ylabel("position p")
    ax.set_title(
        f"Sinusoidal positional encoding, positions 0-{pe.shape[0] - 1}, dim {pe.shape[1]}"
    )
    fig.colorbar(im, ax=ax, label="PE[p, j]")
    save_figure(fig, out / "pe_heatmap.png")


def _plot_gram(gram: Tensor, out: Path) -> None:
    """Heatmap of PE PE^T, whose constant diagonals show the Toeplitz structure."""
    fig, ax = new_figure(5.5, 4.5)
    im = ax.imshow(gram.cpu().numpy(), cmap="viridis", origin="upper")
    ax.set_xlabel("position q")
    ax.set_ylabel("position p")
    ax.set_title("Gram matrix PE PE^T: constant along diagonals (Toeplitz)")
    fig.colorbar(im, ax=ax, label="PE(p) . PE(q)")
    save_figure(fig, out / "gram_heatmap.png")


def _plot_spectrum(lam: Tensor, e99: int, n: int, dim: int, out: Path) -> None:
    """Sorted eigenvalues (log scale) beside the cumulative energy curve."""
    fig, (ax1, ax2) = new_figure(10, 4, ncols=2)
    r = torch.arange(1, lam.numel() + 1)
    floor = float(lam[0]) * torch.finfo(F64).eps ** 2  # eigenvalues of G are squares: eps^2
    ax1.semilogy(r, lam.clamp_min(floor * 1e-3).cpu().numpy(), ".-", ms=3)
    ax1.axhline(floor, color="gray", ls=":", label="rounding floor (eps^2 * largest)")
    ax1.axvline(e99, color="C3", ls="--", label=f"99% energy: {e99} of {dim}")
    ax1.set_xlabel("index (sorted, largest first)")
    ax1.set_ylabel("eigenvalue of PE PE^T")
    ax1.set_title(f"Gram spectrum, {n} positions, dim {dim}")
    ax1.legend(fontsize=8)
    cum = cumulative_energy(lam)
    ax2.plot(r, cum.cpu().numpy(), ".-", ms=3)
    ax2.axhline(0.99, color="C3", ls="--", label="99%")
    ax2.axvline(e99, color="C3", ls="--")
    ax2.set_xlabel("number of directions r")
    ax2.set_ylabel("fraction of trace in top r")
    ax2.set_title(f"Cumulative energy (trace = N dim / 2 = {n * dim // 2})")
    ax2.set_xlim(0, min(lam.numel(), 3 * e99))
    ax2.legend(fontsize=8)
    save_figure(fig, out / "gram_spectrum.png")


def _dot_vs_shift(cfg: Config) -> tuple[Tensor, dict[int, Tensor], Tensor]:
    """``PE(p) . PE(p+k)`` for ``k`` in ``[-K, K]`` at several ``p``, and the closed form."""
    K = cfg.num_positions - 1
    starts = (K, K + 37, K + 250, K + 1000)
    pe = sinusoidal_positional_encoding(max(starts) + K + 1, cfg.dim, cfg.base, dtype=F64)
    ks = torch.arange(-K, K + 1)
    curves = {p: pe[p + ks] @ pe[p] for p in starts}
    omega = positional_frequencies(cfg.dim, cfg.base, dtype=F64)
    closed = torch.cos(ks.to(F64)[:, None] * omega).sum(-1)
    return ks, curves, closed


def _plot_dot(ks: Tensor, curves: dict[int, Tensor], closed: Tensor, out: Path) -> None:
    """Overlay PE(p) . PE(p+k) against k for several p, with the closed form."""
    fig, ax = new_figure(7, 4)
    styles = ["-", "--", "-.", ":"]
    for (p, c), ls in zip(curves.items(), styles, strict=False):
        ax.plot(ks.cpu().numpy(), c.cpu().numpy(), ls=ls, lw=2, label=f"p = {p}")
    ax.plot(ks.cpu().numpy(), closed.cpu().numpy(), "k.", ms=2, label="sum_i cos(w_i k)")
    ax.set_xlabel("shift k")
    ax.set_ylabel("PE(p) . PE(p + k)")
    ax.set_title("The dot product depends only on the shift k (curves overlay exactly)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "dot_vs_shift.png")


def _plot_sweep(rows: list[dict], base: float, out: Path) -> None:
    """99%-energy rank against dim for each window length, with the estimate and N/pi."""
    fig, ax = new_figure(7, 4.5)
    lengths = sorted({r["num_positions"] for r in rows})
    dims = sorted({r["dim"] for r in rows})
    for j, n in enumerate(lengths):
        sel = [r for r in rows if r["num_positions"] == n]
        d = [r["dim"] for r in sel]
        ax.plot(d, [r["energy_rank_99"] for r in sel], "o-", color=f"C{j}", label=f"N = {n}")
        est = [r["resolution_estimate"] for r in sel]
        ax.plot(d, est, "x--", color=f"C{j}", alpha=0.7, label=f"estimate, N = {n}")
        ax.axhline(n / math.pi, color=f"C{j}", ls=":", lw=1)
    ax.plot(dims, dims, color="gray", lw=1, label="rank = dim")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("dim")
    ax.set_ylabel("directions holding 99% of the energy")
    ax.set_title(f"Effective rank of PE over N positions (base {base:g}); dotted: N/pi")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, out / "effective_rank_vs_dim.png")


@register(
    "positional.encoding",
    Config,
    full={
        "gram_positions": 1024,
        "sweep_dims": (16, 32, 64, 128, 256, 512),
        "sweep_positions": (101, 256, 1024),
    },
)
def run(cfg: Config, out: Path) -> dict:
    """Sinusoidal positions: rotation identity, Toeplitz Gram matrix, effective rank."""
    out = Path(out)

    pe_show = sinusoidal_positional_encoding(cfg.num_positions, cfg.dim, cfg.base)
    _plot_pe(pe_show, out)

    pe = sinusoidal_positional_encoding(cfg.gram_positions, cfg.dim, cfg.base, dtype=F64)
    pe32 = sinusoidal_positional_encoding(cfg.gram_positions, cfg.dim, cfg.base)
    gram = pe @ pe.T
    _plot_gram(gram, out)
    lam = gram_eigenvalues(pe)
    main = spectrum_summary(pe, cfg.base)
    # which directions carry the spike? compare the top two with 1 and with (p - mean p)
    U = torch.linalg.svd(pe, full_matrices=False).U
    ones = torch.ones(cfg.gram_positions, dtype=F64) / math.sqrt(cfg.gram_positions)
    ramp = torch.arange(cfg.gram_positions, dtype=F64)
    ramp = (ramp - ramp.mean()) / (ramp - ramp.mean()).norm()
    _plot_spectrum(lam, main["energy_rank_99"], cfg.gram_positions, cfg.dim, out)

    ks, curves, closed = _dot_vs_shift(cfg)
    _plot_dot(ks, curves, closed, out)
    spread = max(float((c - closed).abs().max()) for c in curves.values())

    eye = torch.eye(cfg.dim, dtype=F64)
    orth = max(
        float((R @ R.T - eye).abs().max())
        for R in (rotation_matrix(k, cfg.dim, cfg.base, dtype=F64) for k in _shifts(cfg.dim))
    )

    rows = []
    grid = [(n, d) for n in cfg.sweep_positions for d in cfg.sweep_dims]
    for n, d in tqdm(grid, desc="positional sweep", leave=False):
        rows.append(
            spectrum_summary(sinusoidal_positional_encoding(n, d, cfg.base, dtype=F64), cfg.base)
        )
    if rows:
        _plot_sweep(rows, cfg.base, out)

    return {
        **main,
        "norm_squared_max_error": float(((pe**2).sum(-1) - cfg.dim / 2).abs().max()),
        "rotation_orthogonality_error": orth,
        "dot_product_shift_max_error": spread,
        "float32_max_error": float((pe32.to(F64) - pe).abs().max()),
        "top_eigenvalues": [float(x) for x in lam[:5]],
        "top_eigenvector_vs_constant": float((U[:, 0] @ ones).abs()),
        "second_eigenvector_vs_ramp": float((U[:, 1] @ ramp).abs()),
        "window_band_limit_n_over_pi": cfg.gram_positions / math.pi,
        "trace": float(lam.sum()),
        "sweep_max_toeplitz_deviation": max(
            (r["toeplitz_max_deviation"] for r in rows), default=0.0
        ),
        "sweep": rows,
    }
