"""Summaries over seeds: mean and sample standard deviation, as studies report them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mean_std"]


def mean_std(values: Sequence[float], values_key: str | None = "values") -> dict:
    """Mean, sample std (ddof=1; 0 for one value) and, under ``values_key``, the values."""
    arr = np.asarray(values, dtype=float)
    out: dict = {"mean": float(arr.mean()),
                 "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}
    if values_key is not None:
        out[values_key] = [float(v) for v in arr]
    return out
