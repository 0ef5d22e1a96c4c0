"""Seasonal naive: next week looks like the last observed week.

It is the baseline every engine must beat (benchmarks/accuracy.py) and the fallback for a series an
engine cannot fit (constant, all zeros, a failed optimiser): never smart, never a crash. Bounds are
the empirical quantiles of its own one-week-ahead errors, widened with sqrt(weeks ahead) as for a
random walk across weeks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import (
    ForecastConfig,
    backtest_cutoff,
    future_dates,
    split_series,
    window_configs,
)
from capacity_assets.schema import RAW_RESULTS, empty

SEASON = 7


def predict_one(train: pd.DataFrame, ds: pd.DatetimeIndex, interval: float) -> pd.DataFrame:
    """Seasonal naive forecast of one series' ``train`` (sorted, daily) for the dates ``ds``."""
    y = train["y"].to_numpy(float)
    last = pd.Timestamp(train["ds"].iloc[-1])
    h = ((ds - last).days).to_numpy()
    if len(y) >= SEASON:
        season = y[-SEASON:]
        yhat = season[(h - 1) % SEASON]
        resid = y[SEASON:] - y[:-SEASON]
    else:
        yhat = np.full(len(h), y[-1] if len(y) else 0.0)
        resid = np.diff(y)
    alpha = (1 - interval) / 2
    lo, hi = np.quantile(resid, [alpha, 1 - alpha]) if len(resid) else (0.0, 0.0)
    grow = np.sqrt((h - 1) // SEASON + 1)
    return pd.DataFrame(
        {
            "ds": ds,
            "yhat": yhat,
            "yhat_lower": yhat + min(lo, 0.0) * grow,
            "yhat_upper": yhat + max(hi, 0.0) * grow,
        }
    )


def predict(history: pd.DataFrame, cfg: ForecastConfig, log=None) -> tuple[pd.DataFrame, dict]:
    """Raw backtest, window and future rows of every series; it never fails a series that has a
    value."""
    parts, failed = [], {}
    for key, series in history.groupby(["server_id", "resource"], sort=True):
        series = series.sort_values("ds")
        series = series.assign(y=series["y"].astype(float).interpolate(limit_direction="both"))
        if series["y"].isna().all():
            failed[key] = "no observations"
            continue
        for split, c in window_configs(cfg):  # the backtest, then each window
            train, test = split_series(series, c)
            if len(train) and len(test):
                parts.append(
                    predict_one(train, pd.DatetimeIndex(test["ds"]), cfg.interval).assign(
                        server_id=key[0],
                        resource=key[1],
                        split=split,
                        origin=backtest_cutoff(series["ds"].max(), c),
                    )
                )
        last = series["ds"].max()
        parts.append(
            predict_one(series, future_dates(last, cfg), cfg.interval).assign(
                server_id=key[0], resource=key[1], split="future", origin=last
            )
        )
    return (pd.concat(parts, ignore_index=True) if parts else empty(RAW_RESULTS)), failed
