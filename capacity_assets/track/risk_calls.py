"""Did the risk calls come true? risk_history keeps each vintage's flagged series; outcomes and
precision/recall compare them with the actuals that arrived inside each vintage's risk window.

Definitions:

* risk_history (RISK_HISTORY): the series flagged by one vintage's risk_exceptions, with the
  threshold each was judged against. Only flagged series are stored (a few hundred a vintage, not
  the fleet); the series a vintage did *not* flag, and their thresholds, are in forecast_history,
  which is also the register of vintages (a vintage that flagged nothing is still a vintage). Rows
  carry the golden record's ``run_id``: ``append_risk_vintage`` keeps exactly the (batch, vintage,
  run_id) of forecast_history, so a re-run replaces its vintage (even when it now flags nothing)
  and retention follows CAPACITY_KEEP_VINTAGES.
* window: horizon days 1..``risk_days`` of the series in that vintage (day 1 = its first forecast
  day, the vintage day for current series), as in risk.breaches.
* crossed: a measured (not gap-filled) daily actual in the window is ``>=`` the series' threshold
  at that vintage (the one recorded with the flag, else forecast_history's). The forecast rule
  flags on the upper bound; the outcome is judged on what was measured, because that is what runs
  out.
* status: ``final`` once the newest measured day of the batch is on or after the window's last day,
  else ``so_far`` (a crossing already seen cannot be undone; only "not crossed" can still change).
* scored: only series with at least one measured day in the window count (``days_measured`` > 0):
  a server gone before its window started cannot prove or disprove a call.
* tp = flagged and crossed, fp = flagged and not crossed, fn = crossed without a flag;
  precision = tp / (tp + fp), recall = tp / (tp + fn), NaN when the denominator is 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.inputs.hierarchy import UNASSIGNED, hierarchy_table
from capacity_assets.schema import SERIES_KEY, conform, empty
from capacity_assets.schema import VINTAGE_SERIES_KEY as SERIES
from capacity_assets.track.accuracy import measured
from capacity_assets.track.contracts import RISK_CALL_OUTCOMES, RISK_CALL_SCORES, RISK_HISTORY
from capacity_assets.track.keys import DAY_SPAN, day_numbers, series_codes, series_vintage_codes
from capacity_assets.track.vintages import vintage_of, vintages_of

FINAL, SO_FAR = "final", "so_far"


def as_risk_vintage(
    risk_now: pd.DataFrame, forecasts: pd.DataFrame, threshold: float | None = None
) -> pd.DataFrame:
    """This run's risk_exceptions as risk_history rows, keyed like the golden record's vintage. The
    threshold is risk_exceptions' own per-series column; ``threshold`` only fills a frame without one."""
    if risk_now.empty or forecasts.empty:
        return empty(RISK_HISTORY)
    key = vintage_of(forecasts)
    rows = risk_now.drop(columns=["vintage", "run_id"], errors="ignore").merge(
        key, on="batch", how="inner"
    )
    if "threshold" not in rows.columns:
        if threshold is None:
            raise ValueError("risk_now has no threshold column: pass threshold")
        rows["threshold"] = float(threshold)
    return conform(rows, RISK_HISTORY).sort_values(SERIES, kind="stable").reset_index(drop=True)


def append_risk_vintage(
    risk_history: pd.DataFrame, risk_rows: pd.DataFrame, history: pd.DataFrame
) -> pd.DataFrame:
    """risk_history after this run: ``risk_rows`` replace their (batch, vintage), and only rows of the
    (batch, vintage, run_id) present in ``history`` (forecast_history after append_vintage) stay.
    That drops a replaced run's flags even when the re-run flags nothing, and the vintages that
    retention removed. Idempotent."""
    register = vintages_of(history)[["batch", "vintage", "run_id"]] if len(history) else None
    parts = []
    new = conform(risk_rows, RISK_HISTORY) if len(risk_rows) else empty(RISK_HISTORY)
    if len(risk_history):
        old = conform(risk_history, RISK_HISTORY)
        if len(new):
            replaced = new[["batch", "vintage"]].drop_duplicates().assign(_new=True)
            old = old.merge(replaced, on=["batch", "vintage"], how="left")
            old = old[old["_new"].isna()].drop(columns="_new")
        parts.append(old)
    parts.append(new)
    out = pd.concat([p for p in parts if len(p)] or [empty(RISK_HISTORY)], ignore_index=True)
    if register is None:
        return empty(RISK_HISTORY)
    out = out.merge(
        register.astype({"vintage": "datetime64[ns]"}),
        on=["batch", "vintage", "run_id"],
        how="inner",
    )
    return conform(out.sort_values(SERIES, kind="stable"), RISK_HISTORY)


def _series_windows(history: pd.DataFrame, risk_days: int) -> pd.DataFrame:
    """batch, vintage, server_id, resource, start, window_end, _thr of every series of every vintage."""
    sv, first = series_vintage_codes(history, series_codes(history)[0])
    start = (
        pd.Series(day_numbers(history["ds"])).groupby(sv).min().to_numpy()
    )  # by code, as `first`
    out = (
        history.iloc[first][SERIES + ["threshold"]]
        .rename(columns={"threshold": "_thr"})
        .reset_index(drop=True)
    )
    out = out.astype({"vintage": "datetime64[ns]"})
    out["start"] = pd.to_datetime(start, unit="D").astype("datetime64[ns]")
    out["window_end"] = out["start"] + pd.Timedelta(days=risk_days - 1)
    return out


def _measured_in_window(act: pd.DataFrame, windows: pd.DataFrame) -> np.ndarray:
    """Measured days per window, by binary search on sorted (series, day) keys: no join of every
    actual with every vintage."""
    a_series, w_series = series_codes(act, windows)
    keys = np.sort(a_series * DAY_SPAN + day_numbers(act["ds"]))
    lo = w_series * DAY_SPAN + day_numbers(windows["start"])
    hi = w_series * DAY_SPAN + day_numbers(windows["window_end"])
    return np.searchsorted(keys, hi, side="right") - np.searchsorted(keys, lo, side="left")


def risk_call_outcomes(
    risk_history: pd.DataFrame,
    history: pd.DataFrame,
    processed: pd.DataFrame,
    risk_days: int = 90,
    hierarchy: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per vintage and series it forecast (RISK_CALL_OUTCOMES):
    flagged or not, crossed or not, and whether that is final. Owners of flagged series are the ones
    recorded with the flag; unflagged series take ``hierarchy`` (today's), else 'Unassigned'."""
    cols = RISK_CALL_OUTCOMES
    if history.empty:
        return empty(cols)
    win = _series_windows(history, risk_days)
    flags = (
        conform(risk_history, RISK_HISTORY) if len(risk_history) else empty(RISK_HISTORY)
    ).drop(columns="run_id")
    out = win.merge(
        flags, on=SERIES, how="outer"
    )  # flags without a forecast row: window from the vintage day
    out["flagged"] = out["severity"].notna()
    out["start"] = out["start"].fillna(out["vintage"])
    out["window_end"] = out["window_end"].fillna(out["vintage"] + pd.Timedelta(days=risk_days - 1))
    out["threshold"] = out["threshold"].fillna(out["_thr"])
    owners = (
        hierarchy_table(hierarchy)[0][["server_id", "department", "app_manager"]]
        if hierarchy is not None and len(hierarchy)
        else None
    )
    if owners is not None:
        owners = owners.rename(columns={"department": "_dep", "app_manager": "_mgr"})
        out = out.merge(owners, on="server_id", how="left")
        out["department"] = out["department"].fillna(out.pop("_dep"))
        out["app_manager"] = out["app_manager"].fillna(out.pop("_mgr"))
    out[["department", "app_manager"]] = out[["department", "app_manager"]].fillna(UNASSIGNED)

    act = measured(processed).astype({"ds": "datetime64[ns]"})
    out["days_measured"] = _measured_in_window(act, out) if len(act) else 0
    # crossings are rare: join only the actuals at or above the lowest threshold with the windows
    hot = act.loc[act["y"] >= out["threshold"].min(), ["server_id", "resource", "ds", "y"]]
    cand = hot.merge(
        out[SERIES + ["start", "window_end", "threshold"]],
        on=SERIES_KEY,
        how="inner",
    )
    cand = cand[
        (cand["ds"] >= cand["start"])
        & (cand["ds"] <= cand["window_end"])
        & (cand["y"] >= cand["threshold"])
    ]
    first = cand.groupby(SERIES, observed=True)["ds"].min().rename("first_crossed").reset_index()
    out = out.merge(first, on=SERIES, how="left")
    out["crossed"] = out["first_crossed"].notna()

    newest = act.groupby("batch", observed=True)[
        "ds"
    ].max()  # each batch's clock, else the newest of all
    as_of = out["batch"].map(newest).fillna(act["ds"].max() if len(act) else pd.NaT)
    out["status"] = np.where(as_of >= out["window_end"], FINAL, SO_FAR)
    out = out.sort_values(SERIES, kind="stable")
    return conform(out, cols)


def risk_call_scores(outcomes: pd.DataFrame, by=("vintage",)) -> pd.DataFrame:
    """Precision and recall of the risk calls per group of ``by`` (e.g. ("vintage",) or ("vintage",
    "department"); add "batch" to split batches): ``by`` columns, ``series`` scored, then
    RISK_CALL_SCORES (``series``: how many were scored). ``final`` is true when every scored series
    of the group is final."""
    by = list(by)
    cols = {**{c: RISK_CALL_OUTCOMES.get(c, "string") for c in by}, **RISK_CALL_SCORES}
    o = outcomes[outcomes["days_measured"] > 0] if "days_measured" in outcomes.columns else outcomes
    if o.empty:
        return empty(cols)
    flagged, crossed = o["flagged"].astype(bool), o["crossed"].astype(bool)
    g = o[by].assign(
        series=1,
        tp=(flagged & crossed).astype(int),
        fp=(flagged & ~crossed).astype(int),
        fn=(~flagged & crossed).astype(int),
        final=o["status"].eq(FINAL),
    )
    s = (
        g.groupby(by, observed=True, sort=True)
        .agg(
            series=("series", "sum"),
            tp=("tp", "sum"),
            fp=("fp", "sum"),
            fn=("fn", "sum"),
            final=("final", "all"),
        )
        .reset_index()
    )
    s["precision"] = (s["tp"] / (s["tp"] + s["fp"])).where(s["tp"] + s["fp"] > 0)
    s["recall"] = (s["tp"] / (s["tp"] + s["fn"])).where(s["tp"] + s["fn"] > 0)
    return conform(s, cols)
