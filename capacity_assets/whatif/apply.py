"""A scenario on top of the golden record: the adjusted forecasts, and the risk list and capacity
plan they lead to (computed by ``risk.breaches`` and ``risk.plan``, the baseline's own functions).

Every change works on the unclipped ``demand`` and ``demand_upper`` (and moves ``yhat_lower`` with
them), from its ``from`` day on; ``yhat``, ``yhat_upper`` and ``yhat_lower`` are then the adjusted
values clipped to 0–100, as in the golden record. A row whose values a change leaves as they were
keeps the golden record's values exactly, so a scenario without changes, or with changes of zero,
gives the baseline's risk list and plan to the last digit. Changes apply in the file's order, each
on the result of the ones before (a server that gets load and then migrates half of it moves half
of the new load too).

* ``add_load``: ``points`` adds percentage points, ``percent`` adds that share of the forecast
  itself; with ``ramp_days`` the change grows in equal daily steps and is whole on the
  ``ramp_days``-th day.
* ``resize``: utilisation scales by old size / new size (``factor`` 2 halves it). The plan sizes a
  series on its peak, so its units are of the size installed on the peak's day: the new one when
  the peak comes after the resize.
* ``migrate``: ``share`` of ``from_server``'s load leaves it and lands on ``to_server``, converted
  through the two sizes when the hierarchy knows both (load in cores, GB, Gbps is conserved), in
  percentage points otherwise (said in ``notes``).
* ``retire``: the servers' forecasts end the day before ``from``; with ``to_server`` their whole
  load moves there first, as a migration of share 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capacity_assets.risk import breaches, plan
from capacity_assets.risk.levels import levels
from capacity_assets.risk.thresholds import SIZE_COLUMNS, series_sizes
from capacity_assets.schema import (
    CAPACITY_PLAN,
    RISK_EXCEPTIONS,
    SERIES_KEY,
    conform,
    empty,
    find_column,
)
from capacity_assets.whatif.scenarios import Change, Scenario, selected

WORK = ("demand", "demand_upper", "yhat_lower")  # what a change moves; yhat* follow by clipping


@dataclass
class Applied:
    """A scenario's golden record (the forecasts' columns), its hierarchy (sizes after resizes), the
    series any change selected (recomputed; the others keep the baseline's rows) and notes."""

    scenario: Scenario
    frame: pd.DataFrame
    hierarchy: pd.DataFrame
    touched: pd.DataFrame  # server_id, resource
    notes: list[str] = field(default_factory=list)


def apply(scenario: Scenario, golden: pd.DataFrame, hierarchy: pd.DataFrame) -> Applied:
    """``scenario``'s changes on ``golden`` (the forecasts table: one row per series and day)."""
    f = golden.reset_index(drop=True)
    if not pd.api.types.is_datetime64_any_dtype(f["ds"]):
        f = f.assign(ds=pd.to_datetime(f["ds"]))
    work = {
        "demand": f["demand"].astype("float64").fillna(f["yhat"].astype("float64")).to_numpy(),
        "demand_upper": f["demand_upper"]
        .astype("float64")
        .fillna(f["yhat_upper"].astype("float64"))
        .to_numpy(),
        "yhat_lower": f["yhat_lower"].astype("float64").to_numpy(),
    }
    before = {k: v.copy() for k, v in work.items()}
    hier = hierarchy.copy()
    # rows are picked by integer codes: np.isin on text compares by sorting, seconds on a fleet
    server_codes, names = pd.factorize(f["server_id"].astype(str))
    resource_codes, kinds = pd.factorize(f["resource"].astype(str))
    server_code = {n: i for i, n in enumerate(names)}
    resource_code = {n: i for i, n in enumerate(kinds)}
    servers = np.asarray(names, dtype=object)[server_codes]
    resources = np.asarray(kinds, dtype=object)[resource_codes]
    days = f["ds"].to_numpy()
    touched = np.zeros(len(f), dtype=bool)
    dropped = np.zeros(len(f), dtype=bool)
    notes: list[str] = []
    present = set(server_code)

    def among(codes: np.ndarray, lookup: dict, wanted) -> np.ndarray:
        table = np.zeros(len(lookup) + 1, dtype=bool)
        table[[lookup[w] for w in wanted if w in lookup]] = True
        return table[codes]

    steps = resize_steps(scenario, hier, present)
    sizes: dict[tuple[str, str], float | None] = {}  # sizes the resizes so far installed

    def rows(names, change: Change, resource=None) -> np.ndarray:
        wanted = change.resources if resource is None else (resource,)
        return (
            among(server_codes, server_code, names)
            & among(resource_codes, resource_code, wanted)
            & (days >= np.datetime64(change.start))
            & ~dropped
        )

    def move(change: Change, source: str, target: str, share: float) -> None:
        for r in change.resources:
            src, dst = rows([source], change, r), rows([target], change, r)
            if not src.any() or not dst.any():
                continue
            # the two servers' days matched one to one; a day only one of them has moves nothing
            s_idx, d_idx = np.flatnonzero(src), np.flatnonzero(dst)
            common, si, di = np.intersect1d(days[s_idx], days[d_idx], return_indices=True)
            s_idx, d_idx = s_idx[si], d_idx[di]
            a, b = (sizes.get((x, r), _size(hier, x, r)) for x in (source, target))
            ratio = None if a is None or b is None else a / b
            if ratio is None:
                ratio = 1.0
                notes.append(
                    f"{scenario.name}: {change.label}: {source} -> {target} {r} moved in "
                    "percentage points (the hierarchy does not give both servers' sizes)"
                )
            for k in WORK:
                moved = work[k][s_idx] * share
                work[k][d_idx] = work[k][d_idx] + moved * ratio
                work[k][s_idx] = work[k][s_idx] - moved
            touched[s_idx] = touched[d_idx] = True

    for change in scenario.changes:
        if change.kind == "migrate":
            if change.from_server in present and change.to_server in present:
                move(change, change.from_server, change.to_server, change.share)
            continue
        chosen = selected(change, hier, present)
        if change.kind == "add_load":
            sel = rows(chosen, change)
            weight = _ramp(days[sel], change)
            for k in WORK:
                if change.points is not None:
                    work[k][sel] = work[k][sel] + change.points * weight
                else:
                    work[k][sel] = work[k][sel] * (1.0 + change.percent / 100.0 * weight)
            touched |= sel
        elif change.kind == "resize":
            for server, r, _, new, factor in steps.get(change.position, ()):
                sizes[(server, r)] = new  # a later migration converts through the new size
                sel = rows([server], change, r)
                for k in WORK:
                    work[k][sel] = work[k][sel] / factor
                touched |= sel
        elif change.kind == "retire":
            if change.to_server is not None and change.to_server in present:
                for server in chosen:
                    move(change, server, change.to_server, 1.0)
            gone = rows(chosen, change)
            touched |= gone
            dropped |= gone

    series = pd.DataFrame({"server_id": servers[touched], "resource": resources[touched]})
    out = f
    changed = np.zeros(len(f), dtype=bool)
    for k in WORK:
        changed |= ~np.isclose(work[k], before[k], rtol=0, atol=0, equal_nan=True)
    if changed.any():
        d, u = np.clip(work["demand"], 0, 100), np.clip(work["demand_upper"], 0, 100)
        lower = np.minimum(np.clip(work["yhat_lower"], 0, 100), d)
        out = f.assign(
            **{
                col: np.where(changed, values, f[col].astype("float64"))
                for col, values in (
                    ("demand", work["demand"]),
                    ("demand_upper", work["demand_upper"]),
                    ("yhat", d),
                    ("yhat_upper", u),
                    ("yhat_lower", lower),
                )
            }
        )
    if dropped.any():
        out = out[~dropped].reset_index(drop=True)
    return Applied(
        scenario,
        out,
        resized_hierarchy(scenario, out, hier),
        series.drop_duplicates().reset_index(drop=True),
        list(dict.fromkeys(notes)),
    )


def involved(scenario: Scenario, hierarchy: pd.DataFrame, servers) -> set[str]:
    """Every server a change of ``scenario`` can alter: applying the scenario to these servers'
    rows alone gives the same rows as applying it to the whole record (the rest stay as they are)."""
    out: set[str] = set()
    for change in scenario.changes:
        if change.kind == "migrate":
            out |= {change.from_server, change.to_server}
        else:
            out |= set(selected(change, hierarchy, servers))
            if change.to_server is not None:
                out.add(change.to_server)
    return out


def resize_steps(scenario: Scenario, hierarchy: pd.DataFrame, servers) -> dict[int, list]:
    """change position -> [(server, resource, size before, size after, factor)] of its resizes, in
    the file's order, each from the size the ones before left (None where no size is known: a
    factor still scales the utilisation; a new size without an old one is refused by ``check``)."""
    current: dict[tuple[str, str], float | None] = {}
    out: dict[int, list] = {}
    for change in scenario.changes:
        if change.kind != "resize":
            continue
        for r in change.resources:
            for server in selected(change, hierarchy, servers):
                if (server, r) not in current:
                    current[(server, r)] = _size(hierarchy, server, r)
                old, new = current[(server, r)], dict(change.sizes).get(r)
                if new is None:
                    new = None if old is None else old * change.factor
                    factor = change.factor
                elif old is None:
                    continue
                else:
                    factor = new / old
                current[(server, r)] = new
                out.setdefault(change.position, []).append((server, r, old, new, factor))
    return out


def resized_hierarchy(
    scenario: Scenario, frame: pd.DataFrame, hierarchy: pd.DataFrame
) -> pd.DataFrame:
    """``hierarchy`` with each resized series' size as installed on the day of its peak
    ``demand_upper`` in ``frame`` (the adjusted record): the plan sizes on that peak."""
    steps = resize_steps(scenario, hierarchy, set(frame["server_id"].astype(str)))
    events: dict[tuple[str, str], list] = {}
    for change in scenario.changes:
        for server, r, old, new, _ in steps.get(change.position, ()):
            events.setdefault((server, r), [old]).append((change.start, new))
    if not events:
        return hierarchy
    f = frame[["server_id", "resource", "ds", "demand_upper"]].astype(
        {"server_id": str, "resource": str}
    )
    peaks = f.loc[f.groupby(["server_id", "resource"])["demand_upper"].idxmax().dropna()]
    peak_day = {
        (s, r): pd.Timestamp(d) for s, r, d in zip(peaks.server_id, peaks.resource, peaks.ds)
    }
    out = hierarchy
    for (server, r), (size, *changes) in events.items():
        if (server, r) not in peak_day:
            continue
        for start, new in changes:
            size = new if peak_day[(server, r)] >= start else size
        if size is not None:
            out = _set_size(out, server, r, size)
    return out


def _ramp(days: np.ndarray, change: Change) -> np.ndarray:
    if change.ramp_days <= 1:
        return np.ones(len(days))
    elapsed = (days - np.datetime64(change.start)) / np.timedelta64(1, "D")
    return np.minimum((elapsed + 1.0) / change.ramp_days, 1.0)


def _size(hierarchy: pd.DataFrame, server: str, resource: str) -> float | None:
    size, _ = series_sizes(pd.DataFrame({"server_id": [server], "resource": [resource]}), hierarchy)
    value = float(size.iloc[0])
    return None if np.isnan(value) else value


def _set_size(hierarchy: pd.DataFrame, server: str, resource: str, size: float) -> pd.DataFrame:
    column = find_column(hierarchy, SIZE_COLUMNS[resource]) or SIZE_COLUMNS[resource]
    out = hierarchy.copy()
    if column not in out.columns:
        out[column] = np.nan
    out[column] = out[column].astype(object)
    out.loc[out["server_id"].astype(str) == server, column] = size
    return out


# --- the risk list and the plan under a scenario -----------------------------------------------------


def _series_mask(frame: pd.DataFrame, series: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_frame(series[SERIES_KEY].astype(str))
    return (
        pd.MultiIndex.from_frame(frame[SERIES_KEY].astype(str)).isin(keys)
        if len(frame)
        else np.zeros(0, dtype=bool)
    )


def outcome(
    applied: Applied,
    baseline_risk: pd.DataFrame,
    baseline_plan: pd.DataFrame,
    actuals: pd.DataFrame,
    settings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(risk list, plan) under the scenario: the baseline's rows for the series no change selected,
    ``risk.breaches.risk_exceptions`` and ``risk.plan.capacity_plan`` of the adjusted record for the
    others (per series, so recomputing only those gives what recomputing all would). ``actuals``:
    processed_data rows of at least each series' last week (the already-above rule)."""
    risk_cols, plan_cols = list(RISK_EXCEPTIONS), list(CAPACITY_PLAN)
    base_risk = baseline_risk[risk_cols] if len(baseline_risk) else empty(RISK_EXCEPTIONS)
    base_plan = baseline_plan[plan_cols] if len(baseline_plan) else empty(CAPACITY_PLAN)
    touched = applied.touched
    sub = applied.frame[_series_mask(applied.frame, touched)]
    risk_t, plan_t = recompute(sub, applied.hierarchy, actuals, settings)
    risk = _stack(base_risk[~_series_mask(base_risk, touched)], risk_t, RISK_EXCEPTIONS)
    plan_out = _stack(base_plan[~_series_mask(base_plan, touched)], plan_t, CAPACITY_PLAN)
    return breaches.sort_risk(risk), plan.sort_plan(plan_out)


def _stack(kept: pd.DataFrame, new: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """Both frames in the contract's dtypes, one under the other (an all-empty column of one of
    them, a plan's needed_by say, keeps the contract's dtype instead of deciding it)."""
    parts = [conform(x, columns) for x in (kept, new) if len(x)]
    return pd.concat(parts, ignore_index=True) if parts else empty(columns)


def recompute(
    golden: pd.DataFrame, hierarchy: pd.DataFrame, actuals: pd.DataFrame, settings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(risk list, plan) of a golden record, exactly as the risk_exceptions and capacity_plan assets
    compute them (the risk list without its lifecycle and hierarchy extras)."""
    return risk_list(golden, hierarchy, actuals, settings), plan_of(golden, hierarchy, settings)


def risk_list(
    golden: pd.DataFrame, hierarchy: pd.DataFrame, actuals: pd.DataFrame, settings
) -> pd.DataFrame:
    """``risk.breaches.risk_exceptions`` as the risk_exceptions asset calls it (RISK_EXCEPTIONS)."""
    if golden.empty:
        return empty(RISK_EXCEPTIONS)
    act = actuals[_series_mask(actuals, golden[SERIES_KEY].drop_duplicates())]
    return breaches.risk_exceptions(
        golden,
        hierarchy,
        act,
        risk_days=settings.risk_days,
        thresholds=levels(settings, golden, hierarchy),
    )[list(RISK_EXCEPTIONS)]


def plan_of(golden: pd.DataFrame, hierarchy: pd.DataFrame, settings) -> pd.DataFrame:
    """``risk.plan.capacity_plan`` as the capacity_plan asset calls it (CAPACITY_PLAN)."""
    if golden.empty:
        return empty(CAPACITY_PLAN)
    lv = levels(settings, golden, hierarchy)
    return plan.capacity_plan(
        golden,
        hierarchy,
        thresholds=lv,
        targets=lv,
        lead_days=settings.lead_days,
        reclaim_below=settings.reclaim_below,
        round_gb=settings.round_gb,
    )
