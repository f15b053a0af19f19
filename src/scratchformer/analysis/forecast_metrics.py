r"""Forecast scores: MSE and MAE, their value per lead time, weighted quantile loss and MASE.

Arrays are ``(windows, channels, horizon)``; point scores average over every entry (the
Informer/Autoformer convention: one mean over windows, channels and steps).

* **Weighted quantile loss** (Chronos's WQL) over levels $\tau_1..\tau_K$:
  $\mathrm{WQL} = \frac1K\sum_k \frac{2\sum_{i} \rho_{\tau_k}(y_i - \hat q_{k,i})}{\sum_i |y_i|}$
  with the pinball loss $\rho_\tau(u) = \max(\tau u, (\tau - 1) u)$. A point forecast is the
  same value at every level, which makes WQL equal to $\sum|y-\hat y| / \sum|y|$.
* **MASE**: the forecast's MAE over the MAE of the seasonal-naive step
  $|x_t - x_{t-m}|$ on the window's own history ($m = 24$ for hourly data), one ratio per
  (window, channel), averaged. Scale-free, so it is the same on the raw and standardised scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["QUANTILES", "mae", "mase", "mse", "per_step", "point_scores", "point_wql",
           "quantile_scores", "sample_quantiles", "wql"]

QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``target`` as float64 arrays of one shape."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"forecast shape {p.shape} differs from target shape {t.shape}")
    return p, t


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over every entry."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over every entry."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def per_step(pred: np.ndarray, target: np.ndarray, kind: str = "mse") -> np.ndarray:
    """MSE (or MAE) at each lead time: the mean over every axis but the last."""
    p, t = _pair(pred, target)
    err = (p - t) ** 2 if kind == "mse" else np.abs(p - t)
    return err.reshape(-1, err.shape[-1]).mean(0)


def sample_quantiles(samples: np.ndarray, levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """Quantiles of sample paths ``(..., n_samples, horizon)`` -> ``(K, ..., horizon)``."""
    return np.quantile(np.asarray(samples, dtype=np.float64), levels, axis=-2)


def wql(quantiles: np.ndarray, target: np.ndarray,
        levels: Sequence[float] = QUANTILES) -> float:
    """Weighted quantile loss of ``quantiles`` (K, *target.shape) at ``levels``."""
    q = np.asarray(quantiles, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if q.shape != (len(levels), *t.shape):
        raise ValueError(f"quantiles must have shape {(len(levels), *t.shape)}, got {q.shape}")
    denom = np.abs(t).sum()
    if denom == 0:
        raise ValueError("WQL is undefined for an all-zero target")
    total = 0.0
    for k, tau in enumerate(levels):
        u = t - q[k]
        total += 2.0 * np.maximum(tau * u, (tau - 1.0) * u).sum() / denom
    return float(total / len(levels))


def point_wql(pred: np.ndarray, target: np.ndarray) -> float:
    """WQL of a point forecast used at every level of `QUANTILES`: ``sum|e| / sum|y|``."""
    p, t = _pair(pred, target)
    denom = np.abs(t).sum()
    if denom == 0:
        raise ValueError("WQL is undefined for an all-zero target")
    return float(np.abs(p - t).sum() / denom)


def mase(pred: np.ndarray, target: np.ndarray, history: np.ndarray, season: int = 24) -> float:
    """Mean over (window, channel) of MAE / seasonal-naive MAE on that window's history."""
    p, t = _pair(pred, target)
    h = np.asarray(history, dtype=np.float64)
    if h.shape[:-1] != t.shape[:-1] or h.shape[-1] <= season:
        raise ValueError(f"history must be (..., > {season}) matching the target's leading axes "
                         f"{t.shape[:-1]}, got {h.shape}")
    scale = np.abs(h[..., season:] - h[..., :-season]).mean(-1)
    scale = np.where(scale > 0, scale, np.nan)
    return float(np.nanmean(np.abs(p - t).mean(-1) / scale))


def point_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE and MAE (the standardised-scale scores of the protocol)."""
    return {"mse": mse(pred, target), "mae": mae(pred, target)}


def quantile_scores(quantiles: np.ndarray, point: np.ndarray, target: np.ndarray,
                    history: np.ndarray, season: int = 24,
                    levels: Sequence[float] = QUANTILES) -> dict[str, float]:
    """WQL of the quantile forecast and MASE of the point forecast."""
    return {"wql": wql(quantiles, target, levels),
            "mase": mase(point, target, history, season)}
