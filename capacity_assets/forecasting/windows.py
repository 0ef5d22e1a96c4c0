"""Out-of-sample errors pooled over every origin: the backtest's and the windows'.

Why: one 4-month backtest from one origin is a noisy judge of several contenders per series (a
lucky quarter crowns the wrong one). Each engine also forecasts from later origins
(``ForecastConfig.windows``, rows with split ``window``), every fit seeing only the days up to its
``origin`` and forecasting to the end of history, as cross-validation with several windows does.
The pick, the combination's members and the golden record's bands all read these rows, so they
are scored here once, the tournament's way: measured days only (gap-filled days are our own
interpolation), MAPE with the 5-point floor on the actual.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import with_origin

MAPE_FLOOR = 5.0  # percentage points of utilisation (the tournament's module docstring says why)
OUT_OF_SAMPLE = ("backtest", "window")


def measured(actuals: pd.DataFrame) -> pd.DataFrame:
    """Actuals without the gap-filled days."""
    if "filled" in actuals.columns:
        return actuals[~actuals["filled"].fillna(False).astype(bool)]
    return actuals


def rows(results: pd.DataFrame, actuals: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """A contender's backtest and window rows joined with the measured actuals: ``key``, origin,
    ds, y, yhat, yhat_lower, yhat_upper, demand (when present) and ``h`` (days after the origin)."""
    oos = results[results["split"].isin(OUT_OF_SAMPLE)]
    if oos.empty:
        return pd.DataFrame(columns=[*key, "origin", "ds", "y", "yhat", "h"])
    oos = with_origin(oos)
    act = measured(actuals)
    act = act[(act["ds"] >= oos["ds"].min()) & (act["ds"] <= oos["ds"].max())]
    join = [c for c in key if c in act.columns] + ["ds"]
    out = oos.merge(act[join + ["y"]], on=join, how="inner").dropna(subset=["y", "yhat"])
    h = (pd.to_datetime(out["ds"]) - pd.to_datetime(out["origin"])).dt.days
    return out.assign(h=h.to_numpy())


def pooled(
    results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame, key: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(MAPE per series (``key`` index) and contender (columns) over every origin's days pooled,
    origins with a scored day per series and contender as a wide frame of counts)."""
    mape, origins = {}, {}
    for name, res in results_by_model.items():
        if res is None or res.empty:
            continue
        r = rows(res, actuals, key)
        if r.empty:
            continue
        y, yhat = r["y"].to_numpy(float), r["yhat"].to_numpy(float)
        ape = np.abs(y - yhat) / np.maximum(np.abs(y), MAPE_FLOOR)
        g = r[key].assign(ape=ape, origin=r["origin"]).groupby(key, sort=True, observed=True)
        mape[name] = g["ape"].mean() * 100
        origins[name] = g["origin"].nunique()
    return pd.DataFrame(mape), pd.DataFrame(origins)
