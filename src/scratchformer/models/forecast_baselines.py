"""Forecast baselines of one channel: repeat-last, seasonal naive, ARIMA and ETS.

Histories are arrays ``(N, lookback)``, forecasts ``(N, horizon)``. ARIMA and ETS come from
statsmodels (an optional dependency): ARIMA(2,1,2) fitted by state-space maximum likelihood and
additive Holt-Winters ETS with a damped trend and a 24-hour season, both fitted per history
with fixed orders (no per-window model search). A fit that fails falls back to the seasonal
naive forecast and is counted.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np

from scratchformer.validation import check_int

__all__ = ["ARIMA_ORDER", "classical_forecast", "repeat_last", "seasonal_naive",
           "statsmodels_available"]

ARIMA_ORDER = (2, 1, 2)


def repeat_last(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last observed value, repeated ``horizon`` times."""
    h = np.asarray(history)
    return np.repeat(h[..., -1:], check_int("horizon", horizon), axis=-1)


def seasonal_naive(history: np.ndarray, horizon: int, season: int = 24) -> np.ndarray:
    """The last full season, repeated: step ``k`` gets ``x[T - season + (k mod season)]``."""
    h = np.asarray(history)
    season = check_int("season", season)
    if h.shape[-1] < season:
        raise ValueError(f"history must hold at least one season ({season}), got {h.shape[-1]}")
    idx = h.shape[-1] - season + np.arange(check_int("horizon", horizon)) % season
    return h[..., idx]


def statsmodels_available() -> bool:
    """Whether statsmodels can be imported."""
    try:
        import statsmodels.tsa.arima.model  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread inside the block: small fits run many times slower on several."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def classical_forecast(history: np.ndarray, horizon: int, method: str) -> tuple[np.ndarray, int]:
    """ARIMA or ETS forecasts ``(N, horizon)`` of histories ``(N, lookback)``, and how many fits
    failed (those rows hold the seasonal naive forecast)."""
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if method not in ("arima", "ets"):
        raise ValueError(f"method must be 'arima' or 'ets', got {method!r}")
    h = np.asarray(history, dtype=np.float64)
    out = seasonal_naive(h, horizon).copy()
    failed = 0
    with _one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, row in enumerate(h):
            try:
                if method == "arima":
                    fc = ARIMA(row, order=ARIMA_ORDER).fit().forecast(horizon)
                else:
                    fc = ExponentialSmoothing(row, trend="add", damped_trend=True,
                                              seasonal="add", seasonal_periods=24
                                              ).fit().forecast(horizon)
                fc = np.asarray(fc, dtype=np.float64)
                if not np.isfinite(fc).all():
                    raise ValueError("non-finite forecast")
                out[i] = fc
            except (ValueError, np.linalg.LinAlgError):
                failed += 1
    return out, failed
