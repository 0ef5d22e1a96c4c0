"""Pools: capacity and demand summed over the servers a team buys capacity for together.

Pure pandas (no Dagster). A pool is the value of the optional hierarchy column ``pool`` (a cluster,
an application, a storage array); servers with a blank pool belong to none. Per pool, resource and
forecast day (``pool_demand``):

* ``capacity_units``: the sizes (``cpu_cores``, ``memory_gb``, ``disk_gb``, ``network_gbps``) of
  the pool's servers that have a forecast that day and a known size; a retired server stops
  counting on the day its forecast ends, a resized one counts its new size from the resize's day;
* ``demand_units``, ``demand_upper_units``: the unclipped ``demand`` / ``demand_upper`` (floored
  at 0) × size / 100, summed over the same servers: what the pool's load would use, in cores, GB
  or Gbps, even where one server alone is capped at 100 %;
* ``threshold_units``: ``capacity_units`` × the resource's threshold (CAPACITY_THRESHOLD_<RESOURCE>,
  else CAPACITY_THRESHOLD): a pool's own level, not its servers' per-server overrides.

Per pool and resource, over the whole horizon (``pool_outlook``; the horizon, as the capacity plan,
because a pool is where capacity is bought and buying takes longer than the risk window):

* ``first_breach_date``: first day ``demand_upper_units`` reaches ``threshold_units``;
  ``forecast_breach_date`` the same for ``demand_units``; ``days_to_breach`` from the pool's
  first forecast day;
* ``headroom_units``: the smallest ``threshold_units − demand_upper_units`` of any day (with a
  constant capacity: threshold capacity minus peak upper demand); negative when short;
* ``median_server_units``: the median, over the pool's sized servers, of each server's own peak
  ``demand_upper_units``; ``servers_that_fit``: how many more such servers fit in the headroom
  (``floor(headroom / median)``, 0 when short, empty when the median is 0 or nothing is sized).

Servers without a known size are counted (``servers_without_size``) and left out of the sums, so a
pool's units never mix sized and unsized servers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.risk.thresholds import UNITS, series_sizes
from capacity_assets.schema import (
    POOL_DEMAND,
    POOL_OUTLOOK,
    SERIES_KEY,
    conform,
    empty,
    find_column,
)

POOL = "pool"
BASELINE = ""  # the scenario name of the published golden record
_KEY = ["pool", "resource"]
_TOLERANCE = 1e-9  # sums of floats: 19.0 reached as 18.999999999999996 is reached


def pool_column(hierarchy: pd.DataFrame) -> str | None:
    """The hierarchy's pool column (any case, as other optional columns), None without one."""
    return find_column(hierarchy, POOL)


def pool_of(hierarchy: pd.DataFrame) -> pd.DataFrame:
    """server_id -> pool for the servers with a pool (blanks around it removed; blank = none)."""
    column = pool_column(hierarchy)
    if column is None:
        return pd.DataFrame({"server_id": pd.Series(dtype="string"), "pool": []}, dtype="string")
    pool = hierarchy[column].astype("string").str.strip()
    out = pd.DataFrame({"server_id": hierarchy["server_id"].astype("string"), "pool": pool})
    return out[out["pool"].notna() & out["pool"].ne("")].reset_index(drop=True)


def thresholds(settings) -> dict[str, float]:
    """resource -> the pool threshold, %: CAPACITY_THRESHOLD_<RESOURCE>, else CAPACITY_THRESHOLD."""
    per = settings.threshold_per_resource
    return {r: float(per[r] if per.get(r) is not None else settings.threshold) for r in UNITS}


def resizes(scenario, hierarchy: pd.DataFrame, servers) -> pd.DataFrame:
    """A what-if scenario's resizes as (server_id, resource, start, factor): the size a server has
    from ``start`` on is its size times every factor started by then, as ``whatif.apply`` scales its
    utilisation (so a resize moves capacity and leaves the demand in units as it was)."""
    from capacity_assets.whatif.apply import resize_steps

    starts = {c.position: c.start for c in scenario.changes}
    rows = [
        (server, resource, starts[position], factor)
        for position, steps in resize_steps(scenario, hierarchy, servers).items()
        for server, resource, _, _, factor in steps
    ]
    return pd.DataFrame(rows, columns=["server_id", "resource", "start", "factor"])


def pools(
    golden: pd.DataFrame,
    hierarchy: pd.DataFrame,
    levels: dict[str, float],
    resized: pd.DataFrame | None = None,
    scenario: str = BASELINE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool_outlook, pool_demand) of a golden record (the forecasts' columns: server_id, resource,
    ds, demand, demand_upper, with yhat/yhat_upper where a demand is missing), the hierarchy's pools
    and sizes, the threshold per resource (``thresholds``) and a scenario's ``resizes``."""
    members = pool_of(hierarchy)
    if golden.empty or members.empty:
        return empty(POOL_OUTLOOK), empty(POOL_DEMAND)
    g = _demand(golden).merge(members, on="server_id", how="inner")
    if g.empty:
        return empty(POOL_OUTLOOK), empty(POOL_DEMAND)
    series = g[SERIES_KEY].drop_duplicates().reset_index(drop=True)
    size, _ = series_sizes(series, hierarchy)  # problems are reported by the hierarchy asset
    g = g.merge(series.assign(size=size.to_numpy()), on=SERIES_KEY, how="left")
    g["size"] = _resized(g, resized)
    sized = g["size"].notna()
    g["capacity_units"] = g["size"].where(sized, 0.0)
    g["demand_units"] = (g["demand"] * g["size"] / 100.0).where(sized, 0.0)
    g["demand_upper_units"] = (g["demand_upper"] * g["size"] / 100.0).where(sized, 0.0)

    daily = (
        g.groupby([*_KEY, "ds"], sort=True)[
            ["capacity_units", "demand_units", "demand_upper_units"]
        ]
        .sum()
        .reset_index()
    )
    level = daily["resource"].map(levels).astype("float64")
    daily["threshold_units"] = daily["capacity_units"] * level / 100.0
    daily["scenario"] = scenario

    per_server = (
        g[sized].groupby([*_KEY, "server_id"], sort=False)["demand_upper_units"].max().reset_index()
    )
    median = per_server.groupby(_KEY)["demand_upper_units"].median().rename("median_server_units")
    counts = pd.DataFrame(
        {
            "servers": g.groupby(_KEY)["server_id"].nunique(),
            "sized_servers": g[sized].groupby(_KEY)["server_id"].nunique(),
        }
    ).fillna(0)
    rows = []
    for (pool, resource), d in daily.groupby(_KEY, sort=True):
        rows.append(_outlook(pool, resource, d, levels[resource]))
    out = (
        pd.DataFrame(rows)
        .merge(counts.reset_index(), on=_KEY)
        .merge(median.reset_index(), on=_KEY, how="left")
    )
    out["servers_without_size"] = (out["servers"] - out["sized_servers"]).astype("int64")
    med = out["median_server_units"]
    # rounded first, as the plan's steps: 10 units of headroom hold 2 servers of 5, not 1.999…
    fits = np.floor(np.round(np.maximum(out["headroom_units"], 0.0) / med.where(med > 0), 9))
    out["servers_that_fit"] = pd.array(
        [pd.NA if np.isnan(v) else int(v) for v in fits], dtype="Int64"
    )
    out["scenario"] = scenario
    return conform(out, POOL_OUTLOOK), conform(daily, POOL_DEMAND)


def every_pool(
    published: dict[str, pd.DataFrame], levels: dict[str, float], scenarios: dict
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(pool_outlook, pool_demand, notes) of the published record (``store.pools.read_pooled``:
    hierarchy, forecasts, scenarios) and of each stored scenario that ``scenarios`` (name ->
    Scenario of CAPACITY_SCENARIOS) still holds: its resizes are needed for its capacity."""
    hierarchy, stored = published["hierarchy"], published["scenarios"]
    parts, notes = [pools(published["forecasts"], hierarchy, levels)], []
    for name, golden in stored.groupby("scenario", sort=True):
        if name not in scenarios:  # published under an earlier file: its resizes are unknown
            notes.append(f"scenario {name!r} is not in CAPACITY_SCENARIOS: no pools for it")
            continue
        resized = resizes(scenarios[name], hierarchy, set(golden["server_id"].astype(str)))
        parts.append(pools(golden, hierarchy, levels, resized, scenario=str(name)))
    outlook = pd.concat([p[0] for p in parts if len(p[0])] or [empty(POOL_OUTLOOK)])
    daily = pd.concat([p[1] for p in parts if len(p[1])] or [empty(POOL_DEMAND)])
    return outlook.reset_index(drop=True), daily.reset_index(drop=True), notes


def _demand(golden: pd.DataFrame) -> pd.DataFrame:
    """server_id, resource, ds, demand, demand_upper: unclipped (a missing one falls back to the
    clipped forecast, as the plan does) and floored at 0 (a pool cannot use less than nothing)."""
    f = golden
    demand = f["demand"].astype("float64")
    upper = f["demand_upper"].astype("float64")
    if "yhat" in f.columns:
        demand = demand.fillna(f["yhat"].astype("float64"))
    if "yhat_upper" in f.columns:
        upper = upper.fillna(f["yhat_upper"].astype("float64"))
    return pd.DataFrame(
        {
            "server_id": f["server_id"].astype("string"),
            "resource": f["resource"].astype("string"),
            "ds": pd.to_datetime(f["ds"]).dt.normalize(),
            "demand": demand.clip(lower=0.0),
            "demand_upper": upper.clip(lower=0.0),
        }
    )


def _resized(g: pd.DataFrame, resized: pd.DataFrame | None) -> pd.Series:
    """Each row's size that day: the base size times the factors of the resizes started by then."""
    size = g["size"].astype("float64").copy()
    if resized is None or resized.empty:
        return size
    keys = resized[SERIES_KEY].astype(str).drop_duplicates()
    wanted = set(zip(keys["server_id"], keys["resource"]))
    index = {
        k: v
        for k, v in g.groupby(["server_id", "resource"], sort=False).indices.items()
        if (str(k[0]), str(k[1])) in wanted
    }
    days = g["ds"].to_numpy()
    values = size.to_numpy()
    for server, resource, start, factor in resized.itertuples(index=False):
        rows = index.get((server, resource))
        if rows is None:
            continue
        on = rows[days[rows] >= np.datetime64(pd.Timestamp(start))]
        values[on] = values[on] * float(factor)
    return pd.Series(values, index=g.index, dtype="float64")


def _outlook(pool: str, resource: str, d: pd.DataFrame, level: float) -> dict:
    """One pool and resource over its days (sorted): breach dates, headroom, first-day capacity."""
    sized = d["capacity_units"] > 0
    first_day = d["ds"].iloc[0]
    upper_hit = d[sized & (d["demand_upper_units"] >= d["threshold_units"] - _TOLERANCE)]
    demand_hit = d[sized & (d["demand_units"] >= d["threshold_units"] - _TOLERANCE)]
    breach = upper_hit["ds"].iloc[0] if len(upper_hit) else pd.NaT
    margin = (d["threshold_units"] - d["demand_upper_units"])[sized]
    return {
        "pool": pool,
        "resource": resource,
        "unit": UNITS.get(resource),
        "capacity_units": float(d["capacity_units"].iloc[0]),
        "threshold": level,
        "threshold_units": float(d["threshold_units"].iloc[0]),
        "peak_demand_units": float(d["demand_units"].max()),
        "peak_demand_upper_units": float(d["demand_upper_units"].max()),
        "headroom_units": float(margin.min()) if len(margin) else np.nan,
        "first_breach_date": breach,
        "days_to_breach": pd.NA if pd.isna(breach) else int((breach - first_day).days),
        "forecast_breach_date": demand_hit["ds"].iloc[0] if len(demand_hit) else pd.NaT,
    }
