"""Capacity risk: which series cross the threshold soon, and who owns them.

Pure pandas (no Dagster). Definitions:

* threshold: each series is judged against its own threshold (see ``thresholds``): the hierarchy's
  ``threshold_<resource>`` for its server, else ``CAPACITY_THRESHOLD_<RESOURCE>``, else
  ``CAPACITY_THRESHOLD``. Every row records the ``threshold`` it was judged against.
* window: forecast days 1..``risk_days`` where day 1 is the day after the last history day (with
  the default 90, day 90 is in and day 91 out).
* at risk: ``yhat_upper >= threshold`` on any day in the window. ``>=`` because "95 % is the limit"
  means reaching it is already the problem, and forecasts are clipped at 100 (``>`` 100 could never fire).
* severity 'critical' when ``yhat`` itself reaches the threshold in the window (the expected path
  crosses), 'warning' when only the upper bound does (plausible, not expected).
* already above: the mean of the last 7 observed (not gap-filled) days up to the last history day
  is ``>= threshold``. The mean rather than the max, so that one backup spike does not page anyone
  while a saturated week does. Reported as critical with days_to_breach 0 and first_breach_date =
  last history day, whatever the forecast says. Only series with a forecast are considered: a
  skipped series may be stale or decommissioned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.inputs.hierarchy import HIERARCHY_REQUIRED, UNASSIGNED, hierarchy_table
from capacity_assets.risk.thresholds import THRESHOLD_PREFIX, per_series, series_levels
from capacity_assets.schema import BATCH_SERIES_KEY as KEY
from capacity_assets.schema import RISK_EXCEPTIONS, SERIES_KEY, conform

SEVERITY_ORDER = {"critical": 0, "warning": 1}
LAST_WEEK_DAYS = 7


def _history_end(forecasts: pd.DataFrame, actuals: pd.DataFrame) -> pd.DataFrame:
    """Last history day per series: the actuals' last day, else the day before the first forecast."""
    first_fc = forecasts.groupby(KEY, as_index=False)["ds"].min()
    first_fc["history_end"] = first_fc.pop("ds") - pd.Timedelta(days=1)
    last_act = actuals.groupby(KEY, as_index=False)["ds"].max().rename(columns={"ds": "act_end"})
    out = first_fc.merge(last_act, on=KEY, how="left")
    out["history_end"] = out["act_end"].fillna(out["history_end"])
    return out.drop(columns="act_end")


def _last_week_mean(actuals: pd.DataFrame, ends: pd.DataFrame) -> pd.DataFrame:
    if len(ends):  # no series' last week starts earlier: the rest of the history is never merged
        actuals = actuals[
            actuals["ds"] > ends["history_end"].min() - pd.Timedelta(days=LAST_WEEK_DAYS)
        ]
    a = actuals.merge(ends, on=KEY, how="inner")
    a = a[
        (a["ds"] <= a["history_end"])
        & (a["ds"] > a["history_end"] - pd.Timedelta(days=LAST_WEEK_DAYS))
    ]
    if "filled" in a.columns:
        a = a[~a["filled"].fillna(False).astype(bool)]
    return a.groupby(KEY, as_index=False)["y"].mean().rename(columns={"y": "last_week_mean"})


def _breaches(
    forecasts: pd.DataFrame, actuals: pd.DataFrame, threshold: pd.Series, risk_days: int
) -> pd.DataFrame:
    """``threshold``: one value per row of ``forecasts`` (same index)."""
    ends = _history_end(forecasts, actuals)
    f = forecasts.assign(threshold=threshold).merge(ends, on=KEY, how="inner")
    day = (f["ds"] - f["history_end"]).dt.days
    f = f[(day >= 1) & (day <= risk_days)].sort_values(KEY + ["ds"])
    g = f.groupby(KEY)
    out = (
        pd.DataFrame(
            {
                "peak_upper": g["yhat_upper"].max(),
                "peak_yhat": g["yhat"].max(),
                "first_breach_date": f[f["yhat_upper"] >= f["threshold"]].groupby(KEY)["ds"].min(),
                "model": g["model"].first(),
                "champion_mape": g["champion_mape"].first(),
                "trust": g["trust"].first(),
                "threshold": g["threshold"].first(),
            }
        )
        .reset_index()
        .merge(ends, on=KEY, how="left")
    )
    out = out.merge(_last_week_mean(actuals, ends), on=KEY, how="left")
    already = out["last_week_mean"] >= out["threshold"]
    ahead = out["first_breach_date"].notna()
    out = out[already | ahead].copy()
    already = already[out.index]
    out["severity"] = np.where(
        already | (out["peak_yhat"] >= out["threshold"]), "critical", "warning"
    )
    out["first_breach_date"] = out["first_breach_date"].where(~already, out["history_end"])
    out["days_to_breach"] = (out["first_breach_date"] - out["history_end"]).dt.days.astype("int64")
    return out


def risk_exceptions(
    forecasts: pd.DataFrame,
    hierarchy: pd.DataFrame,
    actuals: pd.DataFrame,
    threshold: float = 95.0,
    risk_days: int = 90,
    thresholds=None,
    threshold_per_resource: dict[str, float | None] | None = None,
) -> pd.DataFrame:
    """One row per series at risk (RISK_EXCEPTIONS, extra hierarchy columns after), most urgent first.
    Servers missing from the hierarchy are kept, owned by 'Unassigned': an unowned risk is still a risk.

    ``thresholds``: the per-series thresholds, as ``thresholds.levels_table`` returns them (a frame
    with server_id, resource, threshold; or a Series indexed by (server_id, resource); or a number).
    It must cover every forecast series. Without it, each series' threshold is worked out here from
    the hierarchy's ``threshold_<resource>`` columns, ``threshold_per_resource`` and ``threshold``
    (the default), and problems in those columns are not reported: call ``levels_table`` (or
    ``series_levels``) yourself to get them."""
    hier, _ = hierarchy_table(hierarchy)
    if thresholds is None:
        per_row, _ = series_levels(
            forecasts[SERIES_KEY], hierarchy, threshold, threshold_per_resource, THRESHOLD_PREFIX
        )
    else:
        per_row = per_series(thresholds, forecasts[SERIES_KEY], "threshold")
    risk = _breaches(forecasts, actuals, per_row, risk_days)
    risk = risk.merge(hier, on="server_id", how="left")
    for c in ("department", "app_manager"):
        risk[c] = risk[c].fillna(UNASSIGNED)
    risk = sort_risk(risk)
    extra = [c for c in hier.columns if c not in HIERARCHY_REQUIRED]
    return conform(risk[list(RISK_EXCEPTIONS) + extra], RISK_EXCEPTIONS, extra=True)


def sort_risk(risk: pd.DataFrame) -> pd.DataFrame:
    """Critical first, then soonest, then by name so reruns produce identical files."""
    order = risk["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    return (
        risk.assign(_sev=order)
        .sort_values(["_sev", "days_to_breach", "server_id", "resource"], kind="stable")
        .drop(columns="_sev")
        .reset_index(drop=True)
    )
