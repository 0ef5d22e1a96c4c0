"""From forecast to plan: per series, how much capacity to add or reclaim, and by when.

Pure pandas (no Dagster). One row per forecast series (CAPACITY_PLAN). Definitions:

* horizon: every day of the series' forecast in the golden record (``CAPACITY_HORIZON_DAYS``, 180 by
  default), not only the risk window: buying takes time, so the plan looks as far as the forecast.
* ``peak_demand_upper``: the highest ``demand_upper`` over the horizon (the upper bound before the
  clip at 100, floored at 0; a missing value falls back to ``yhat_upper``).
* crossing: the first day ``yhat_upper >= threshold``, the same rule as risk_exceptions (for
  thresholds up to 100 this is the day ``demand_upper`` reaches it).
* ``action``:
  - ``add`` when the upper bound crosses the threshold on any day of the horizon;
  - ``reclaim`` when it does not, ``peak_demand_upper`` stays below ``reclaim_below`` (30) and below
    the target, and the forecast's trust is ``high`` or ``medium`` (nobody gives back capacity on a
    forecast nobody trusts);
  - ``none`` otherwise.
* ``needed_by``: for ``add``, the crossing day minus ``lead_days`` (30): the day the order must be
  placed. It can lie before the first forecast day: the order is already late. NaT otherwise.
* ``change_pct``: the capacity change, in percent of the installed capacity, that brings
  ``peak_demand_upper`` back to the target: ``(peak_demand_upper / target - 1) * 100``. 120 % of
  today's capacity at target 80 gives +50.0 (add half again); 26 % at target 80 gives -67.5. Stored
  in percent points, positive to add and negative to reclaim; 0.0 for ``none`` rows (the gap stays
  visible as ``peak_demand_upper`` against ``target``).
* ``change_units``: ``change_pct`` applied to the server's size when the hierarchy knows it
  (``cpu_cores``, ``memory_gb``, ``disk_gb``, ``network_gbps``), in steps of 1 core, ``round_gb`` GB
  (8) and ``round_gbps`` Gbps (0.1). Adds round away from zero (buy enough: 3.2 cores -> 4), reclaims
  toward zero (never take back more than is safe: 172.8 GB -> 168), and a reclaim always leaves at
  least one step installed. NaN, with ``unit`` null, when the size is unknown: plan in percent only.
  0.0 for ``none`` rows with a known size.
* ``review``: an ``add`` or ``reclaim`` driven by a forecast whose trust is not ``high``/``medium``:
  a person should look before buying.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.inputs.hierarchy import UNASSIGNED, hierarchy_table
from capacity_assets.risk.thresholds import (
    DEFAULT_TARGET,
    DEFAULT_THRESHOLD,
    TARGET_PREFIX,
    THRESHOLD_PREFIX,
    UNITS,
    per_series,
    series_levels,
    series_sizes,
)
from capacity_assets.schema import BATCH_SERIES_KEY as KEY
from capacity_assets.schema import CAPACITY_PLAN, RESOURCES, conform, empty

ADD, RECLAIM, NONE = "add", "reclaim", "none"
ACTION_ORDER = {ADD: 0, RECLAIM: 1, NONE: 2}
TRUSTED = ("high", "medium")
REQUIRED = ["batch", "server_id", "resource", "ds", "yhat_upper", "demand_upper", "trust"]
ROUND_CORES = 1.0
PRECISION = (
    9  # decimals kept before rounding to steps, so 3.2000000000000006 cores is 3.2, not 4.0000001
)

# department_totals' columns (not a stored table: the report and the dashboard compute it)
DEPARTMENT_TOTALS = {
    "department": "string",
    "resource": "string",
    "unit": "string",
    "series": "int64",
    "add_series": "int64",
    "add_units": "float64",
    "add_unsized": "int64",
    "earliest_needed_by": "datetime64[ns]",
    "reclaim_series": "int64",
    "reclaim_units": "float64",
    "reclaim_unsized": "int64",
    "review_series": "int64",
}


def _steps(resource: pd.Series, round_gb: float, round_gbps: float) -> pd.Series:
    steps = {"cpu": ROUND_CORES, "memory": round_gb, "disk": round_gb, "network": round_gbps}
    return resource.map(steps).astype("float64")


def change_units(change_pct, size, step, action) -> np.ndarray:
    """``change_pct`` of ``size`` in whole ``step``s: adds away from zero, reclaims toward zero and
    leaving at least one step installed, ``none`` rows 0. NaN where the size is unknown."""
    change_pct, size, step = (np.asarray(x, dtype="float64") for x in (change_pct, size, step))
    action = np.asarray(action, dtype=object)
    raw = np.round(size * np.abs(change_pct) / 100.0 / step, PRECISION)
    n = np.where(action == ADD, np.ceil(raw), np.floor(raw))
    most = np.maximum(np.floor(np.round(size / step, PRECISION)) - 1, 0)  # steps a reclaim may take
    n = np.where(action == RECLAIM, np.minimum(n, most), n)
    n = np.where(action == NONE, 0.0, n)
    out = np.round(np.sign(change_pct) * n * step, 6) + 0.0  # + 0.0: no -0.0
    return np.where(np.isfinite(size), out, np.nan)


def capacity_plan(
    forecasts: pd.DataFrame,
    hierarchy: pd.DataFrame | None,
    thresholds=None,
    targets=None,
    lead_days: int = 30,
    reclaim_below: float = 30.0,
    round_gb: float = 8.0,
    round_gbps: float = 0.1,
) -> pd.DataFrame:
    """One row per forecast series (CAPACITY_PLAN): add first by ``needed_by``, then reclaim, then none.

    ``thresholds`` and ``targets``: per series, as ``thresholds.levels_table`` returns them (a frame
    with server_id, resource and a ``threshold``/``target`` column; the same frame can be passed as
    both), a Series indexed by (server_id, resource), or one number. They must cover every series.
    ``None`` works them out from the hierarchy's ``threshold_*``/``target_*`` columns with the
    defaults 95 and 80. A target above its threshold is capped at the threshold.
    ``forecasts``: the golden record with ``demand_upper`` (see the module docstring).
    """
    missing = [c for c in REQUIRED if c not in forecasts.columns]
    if missing:
        raise ValueError(
            f"forecasts are missing columns {missing}; found {list(forecasts.columns)}"
        )
    if int(lead_days) != lead_days or lead_days < 0:
        raise ValueError(f"lead_days={lead_days!r}: expected a whole number of days >= 0")
    if not 0 <= reclaim_below <= 100:
        raise ValueError(f"reclaim_below={reclaim_below!r}: expected a percentage in [0, 100]")
    if not (round_gb > 0 and round_gbps > 0):
        raise ValueError(f"round_gb={round_gb!r}, round_gbps={round_gbps!r}: expected steps > 0")
    if forecasts.empty:
        return empty(CAPACITY_PLAN)

    f = forecasts.sort_values(KEY + ["ds"], kind="stable")
    g = f.groupby(KEY, sort=False)
    demand_upper = f["demand_upper"].astype("float64").fillna(f["yhat_upper"].astype("float64"))
    s = pd.DataFrame(
        {
            "peak_demand_upper": demand_upper.groupby([f[k] for k in KEY], sort=False)
            .max()
            .clip(lower=0.0),
            "trust": g["trust"].first(),
        }
    ).reset_index()

    if thresholds is None:
        thr, _ = series_levels(s, hierarchy, DEFAULT_THRESHOLD, None, THRESHOLD_PREFIX)
    else:
        thr = per_series(thresholds, s, "threshold")
    if targets is None:
        tgt, _ = series_levels(s, hierarchy, DEFAULT_TARGET, None, TARGET_PREFIX)
    else:
        tgt = per_series(targets, s, "target")
    s["threshold"] = thr.to_numpy()
    s["target"] = np.minimum(tgt.to_numpy(), s["threshold"].to_numpy())

    rows = f[KEY + ["ds", "yhat_upper"]].merge(s[KEY + ["threshold"]], on=KEY, how="left")
    crossing = (
        rows[rows["yhat_upper"] >= rows["threshold"]]
        .groupby(KEY)["ds"]
        .min()
        .rename("crossing")
        .reset_index()
    )
    s = s.merge(crossing, on=KEY, how="left")

    adds = s["crossing"].notna()
    trusted = s["trust"].astype("string").isin(TRUSTED).fillna(False).astype(bool)
    quiet = (s["peak_demand_upper"] < reclaim_below) & (s["peak_demand_upper"] < s["target"])
    s["action"] = np.where(adds, ADD, np.where(quiet & trusted, RECLAIM, NONE))
    s["needed_by"] = (s["crossing"] - pd.Timedelta(days=int(lead_days))).where(adds)
    s["change_pct"] = np.where(
        s["action"] == NONE, 0.0, (s["peak_demand_upper"] / s["target"] - 1.0) * 100.0
    )
    s["change_pct"] = s["change_pct"].round(PRECISION) + 0.0

    size, _ = series_sizes(s, hierarchy)
    s["change_units"] = change_units(
        s["change_pct"], size, _steps(s["resource"], round_gb, round_gbps), s["action"]
    )
    s["unit"] = s["resource"].map(UNITS).where(size.notna().to_numpy())
    s["review"] = (s["action"] != NONE) & ~trusted

    hier, _ = (
        hierarchy_table(hierarchy)
        if hierarchy is not None and len(hierarchy.columns)
        else (None, [])
    )
    if hier is not None:
        s = s.merge(hier[["server_id", "department", "app_manager"]], on="server_id", how="left")
    for c in ("department", "app_manager"):
        s[c] = s[c].fillna(UNASSIGNED) if c in s.columns else UNASSIGNED
    return conform(sort_plan(s), CAPACITY_PLAN)


def sort_plan(plan: pd.DataFrame) -> pd.DataFrame:
    """Adds first, soonest needed first; then reclaims, largest first; then the rest; ties by name."""
    order = plan["action"].map(ACTION_ORDER).fillna(len(ACTION_ORDER))
    return (
        plan.assign(_a=order)
        .sort_values(
            ["_a", "needed_by", "change_pct", "server_id", "resource"],
            kind="stable",
            na_position="last",
        )
        .drop(columns="_a")
        .reset_index(drop=True)
    )


def department_totals(plan: pd.DataFrame) -> pd.DataFrame:
    """Per department and resource (DEPARTMENT_TOTALS): series planned; series, units (summed over rows
    with a known size) and series without a size to add and to reclaim; the earliest needed_by; and the
    series to review. ``reclaim_units`` is negative like ``change_units``, so add + reclaim is the net
    change. Every department × resource with a plan row is listed, zeros included."""
    if plan.empty:
        return empty(DEPARTMENT_TOTALS)
    p = plan.assign(
        _add=plan["action"] == ADD,
        _rec=plan["action"] == RECLAIM,
        _sized=plan["change_units"].notna(),
        _review=plan["review"].fillna(False).astype(bool),
    )
    p["_add_units"] = p["change_units"].where(p["_add"] & p["_sized"], 0.0)
    p["_rec_units"] = p["change_units"].where(p["_rec"] & p["_sized"], 0.0)
    p["_add_needed"] = p["needed_by"].where(p["_add"])
    g = p.groupby(["department", "resource"], sort=False)
    out = pd.DataFrame(
        {
            "series": g.size(),
            "add_series": g["_add"].sum(),
            "add_units": g["_add_units"].sum(),
            "add_unsized": (p["_add"] & ~p["_sized"])
            .groupby([p["department"], p["resource"]], sort=False)
            .sum(),
            "earliest_needed_by": g["_add_needed"].min(),
            "reclaim_series": g["_rec"].sum(),
            "reclaim_units": g["_rec_units"].sum(),
            "reclaim_unsized": (p["_rec"] & ~p["_sized"])
            .groupby([p["department"], p["resource"]], sort=False)
            .sum(),
            "review_series": g["_review"].sum(),
        }
    ).reset_index()
    out["unit"] = out["resource"].map(UNITS)
    out["add_units"] = out["add_units"].round(6) + 0.0
    out["reclaim_units"] = out["reclaim_units"].round(6) + 0.0
    rank = out["resource"].map({r: i for i, r in enumerate(RESOURCES)}).fillna(len(RESOURCES))
    out = (
        out.assign(_r=rank)
        .sort_values(["department", "_r", "resource"], kind="stable")
        .drop(columns="_r")
    )
    return conform(out, DEPARTMENT_TOTALS)
