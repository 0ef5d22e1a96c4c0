"""Calibrating forecast bounds on the backtest, shared by every engine.

A model's own interval is only as honest as its assumptions (Prophet's assumes i.i.d. noise around a
trend that keeps its historical flexibility; a tree ensemble has none). The backtest is a real
out-of-sample test made just before the future forecast, so we use it as the calibration set of a
split-conformal scaling: per series, ``k`` is the ``interval``-quantile of the backtest errors measured
in units of the model's own half-width, and the future half-widths are multiplied by ``k``. A model
whose backtest bounds covered 80 % keeps them (k = 1); one that was twice too narrow gets them
doubled. The shape of the bounds (how they widen with the horizon) stays the model's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

K_MIN, K_MAX = 0.2, 10.0


def scale_factor(y: np.ndarray, yhat: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 interval: float) -> float:
    """Conformal scale ``k`` for one series from its backtest actuals and bounds."""
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat, lower, upper = y[ok], yhat[ok], lower[ok], upper[ok]
    if len(y) == 0:
        return 1.0
    err = y - yhat
    half = np.where(err >= 0, upper - yhat, yhat - lower)
    floor = max(1e-6, 0.05 * float(np.mean(np.abs(err))))  # degenerate zero-width bounds
    score = np.abs(err) / np.maximum(half, floor)
    n = len(score)
    level = min(1.0, np.ceil((n + 1) * interval) / n)  # finite-sample conformal quantile
    return float(np.clip(np.quantile(score, level), K_MIN, K_MAX))


def calibrate(future: pd.DataFrame, backtest: pd.DataFrame, actuals: pd.DataFrame,
              interval: float) -> pd.DataFrame:
    """Rescale ``future`` bounds per series by the backtest's conformal factor.

    ``backtest`` and ``future`` hold ENGINE_RESULTS rows, ``actuals`` server_id, resource, ds, y.
    Series without backtest rows keep their bounds.
    """
    if future.empty:
        return future
    bt = backtest.merge(actuals[["server_id", "resource", "ds", "y"]], on=["server_id", "resource", "ds"])
    factors = {
        key: scale_factor(g["y"].to_numpy(float), g["yhat"].to_numpy(float),
                          g["yhat_lower"].to_numpy(float), g["yhat_upper"].to_numpy(float), interval)
        for key, g in bt.groupby(["server_id", "resource"], sort=False)
    }
    keys = list(zip(future["server_id"], future["resource"]))
    k = np.array([factors.get(key, 1.0) for key in keys])
    out = future.copy()
    out["yhat_lower"] = out["yhat"] - k * (out["yhat"] - out["yhat_lower"])
    out["yhat_upper"] = out["yhat"] + k * (out["yhat_upper"] - out["yhat"])
    return out


def clip_utilisation(df: pd.DataFrame) -> pd.DataFrame:
    """Clip to 0–100 after the bounds are computed, keeping lower <= yhat <= upper."""
    out = df.copy()
    for c in ("yhat", "yhat_lower", "yhat_upper"):
        out[c] = out[c].clip(0.0, 100.0)
    out["yhat_lower"] = np.minimum(out["yhat_lower"], out["yhat"])
    out["yhat_upper"] = np.maximum(out["yhat_upper"], out["yhat"])
    return out
