"""Exception lifecycle: is a risk new or ongoing, since when, and why did a resolved one go away?

Rules (per batch; "previous vintage" = the newest vintage of the batch's register older than this
one, the register being forecast_history's vintages, so a vintage that flagged nothing breaks a run):

* status ``new``: not flagged in the previous vintage (or there is none); ``ongoing``: flagged there.
* first_flagged: the oldest vintage of the unbroken run of consecutive vintages, ending with this
  one, in which the series was flagged. It cannot go back further than the oldest kept vintage
  (CAPACITY_KEEP_VINTAGES).
* resolved: flagged in the previous vintage, not in this one. Reason, first that applies:
  ``left the fleet`` when the series has no forecast now (it left processed_data, or was skipped);
  ``threshold changed`` when the series' threshold today differs from the one its flag recorded
  (a setting or its hierarchy ``threshold_<resource>`` changed) and today's forecast would still be
  flagged under the old one (upper bound >= old threshold in the window); ``forecast fell`` when
  today's upper bound stays below today's threshold in the whole window; else unknown (NA, e.g.
  CAPACITY_RISK_DAYS changed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.schema import BATCH_SERIES_KEY as KEY
from capacity_assets.schema import RISK_EXCEPTIONS, SERIES_KEY, conform, empty
from capacity_assets.track.contracts import (
    REASON_FELL,
    REASON_LEFT,
    REASON_THRESHOLD,
    RISK_EXCEPTIONS_LIFECYCLE,
    RISK_HISTORY,
    RISK_RESOLVED,
)

NEW, ONGOING = "new", "ongoing"


def _day(vintage) -> pd.Timestamp:
    return pd.Timestamp(vintage).normalize()


def _register(vintages: pd.DataFrame, batches, vintage: pd.Timestamp) -> pd.DataFrame:
    """batch, vintage, ord (1 = oldest) of every vintage up to ``vintage``, which is added for ``batches``."""
    have = vintages[["batch", "vintage"]].astype({"batch": "string", "vintage": "datetime64[ns]"})
    this = pd.DataFrame({"batch": pd.Series(list(batches), dtype="string"), "vintage": vintage})
    reg = pd.concat(
        [p for p in (have, this) if len(p)] or [this], ignore_index=True
    ).drop_duplicates()
    reg = reg[reg["vintage"] <= vintage]
    reg["ord"] = reg.groupby("batch", observed=True)["vintage"].rank(method="dense").astype("int64")
    return reg


def _previous(reg: pd.DataFrame, vintage: pd.Timestamp) -> pd.DataFrame:
    """batch, vintage of each batch's previous vintage."""
    return (
        reg[reg["vintage"] < vintage].groupby("batch", observed=True)["vintage"].max().reset_index()
    )


def _flags(risk_history: pd.DataFrame) -> pd.DataFrame:
    if risk_history is None or risk_history.empty:
        return empty(RISK_HISTORY)
    return conform(risk_history, RISK_HISTORY)


def with_status(
    risk_now: pd.DataFrame, risk_history: pd.DataFrame, vintage, vintages: pd.DataFrame
) -> pd.DataFrame:
    """``risk_now`` (risk_exceptions of ``vintage``) with ``status`` and ``first_flagged`` after the
    RISK_EXCEPTIONS columns, before the extra hierarchy ones (a hierarchy column already called
    ``status`` is kept as ``hierarchy_status``, the rule hierarchy_table applies to every clash).
    ``vintages``: the register, ``vintages_of(forecast_history)`` or forecast_history itself, with or
    without this vintage yet. Rows of ``risk_history`` from ``vintage`` itself or later are ignored,
    so the answer is the same before or after this run's risk_history is written."""
    v = _day(vintage)
    out = risk_now.rename(
        columns={c: f"hierarchy_{c}" for c in RISK_EXCEPTIONS_LIFECYCLE if c in risk_now.columns}
    )
    reg = _register(vintages, out["batch"].astype("string").unique(), v)
    past = _flags(risk_history)
    past = past.loc[past["vintage"] < v, KEY + ["vintage"]]
    now = out[KEY].astype({c: "string" for c in KEY}).assign(vintage=v)
    runs = pd.concat(
        [p for p in (past.astype({c: "string" for c in KEY}), now) if len(p)] or [now],
        ignore_index=True,
    ).drop_duplicates()
    runs = runs.merge(reg, on=["batch", "vintage"], how="inner").sort_values(
        KEY + ["ord"], kind="stable"
    )
    same = runs[KEY].eq(runs[KEY].shift()).fillna(False).astype(bool).all(axis=1)
    run_no = (~same | runs["ord"].diff().ne(1)).cumsum()
    runs["first_flagged"] = runs.groupby(run_no)["vintage"].transform("min")
    first = runs.loc[runs["vintage"] == v, KEY + ["first_flagged"]]
    merged = now.drop(columns="vintage").merge(first, on=KEY, how="left")
    out = out.copy()
    out["first_flagged"] = merged["first_flagged"].fillna(v).astype("datetime64[ns]").to_numpy()
    out["status"] = pd.Series(
        np.where(out["first_flagged"] < v, ONGOING, NEW), index=out.index, dtype="string"
    )
    cols = [c for c in out.columns if c not in RISK_EXCEPTIONS_LIFECYCLE]
    at = max((cols.index(c) + 1 for c in RISK_EXCEPTIONS if c in cols), default=len(cols))
    return out[cols[:at] + list(RISK_EXCEPTIONS_LIFECYCLE) + cols[at:]].reset_index(drop=True)


def _peak_upper(forecasts: pd.DataFrame, risk_days: int) -> pd.DataFrame:
    """Highest upper bound of each series in its risk window (days 1..risk_days of its forecast)."""
    f = forecasts[KEY + ["ds", "yhat_upper"]].astype({"ds": "datetime64[ns]"})
    day = (f["ds"] - f.groupby(KEY, observed=True, sort=False)["ds"].transform("min")).dt.days + 1
    return (
        f[day <= risk_days]
        .groupby(KEY, observed=True)["yhat_upper"]
        .max()
        .rename("peak_upper")
        .reset_index()
        .astype({c: "string" for c in KEY})
    )


def _levels(thresholds, series: pd.DataFrame) -> np.ndarray:
    """Today's threshold of each row of ``series`` (NaN for a series without one, e.g. gone), from
    a number, a Series indexed by (server_id, resource) or a frame with server_id, resource, threshold."""
    if isinstance(thresholds, (int, float, np.integer, np.floating)) and not isinstance(
        thresholds, bool
    ):
        return np.full(len(series), float(thresholds))
    frame = (
        thresholds.rename("threshold").reset_index()
        if isinstance(thresholds, pd.Series)
        else thresholds
    )
    frame = frame[SERIES_KEY + ["threshold"]].astype({"server_id": "string", "resource": "string"})
    frame = frame.drop_duplicates(SERIES_KEY).rename(columns={"threshold": "_now"})
    keys = series[SERIES_KEY].astype("string").reset_index(drop=True)
    return keys.merge(frame, on=SERIES_KEY, how="left")["_now"].to_numpy(float)


def resolved(
    risk_history: pd.DataFrame,
    risk_now: pd.DataFrame,
    forecasts_now: pd.DataFrame,
    vintage,
    vintages: pd.DataFrame,
    thresholds,
    risk_days: int = 90,
    batches=(),
) -> pd.DataFrame:
    """risk_resolved (RISK_RESOLVED): series flagged in the previous vintage and not in ``vintage``,
    with the reason when known. ``forecasts_now``: today's golden record; ``thresholds``: today's
    per-series thresholds as given to risk_exceptions (a number, or ``levels_table``'s frame);
    ``vintages``: the register, as in ``with_status``; ``batches``: batches judged at ``vintage``
    even without a row now (every server of a batch left the fleet)."""
    v = _day(vintage)
    batches = set(map(str, batches)) | set(
        vintages.loc[vintages["vintage"].astype("datetime64[ns]") == v, "batch"].astype(str)
    )
    batches |= set(forecasts_now["batch"].astype(str)) | set(risk_now["batch"].astype(str))
    prev = _previous(_register(vintages, sorted(batches), v), v)
    prev = prev[prev["batch"].isin(batches)]
    flags = _flags(risk_history).merge(prev, on=["batch", "vintage"], how="inner")
    if flags.empty:
        return empty(RISK_RESOLVED)
    still = risk_now[KEY].astype("string").drop_duplicates().assign(_still=True)
    gone = flags.merge(still, on=KEY, how="left")
    gone = gone[gone["_still"].isna()].drop(columns="_still")
    gone = gone.merge(_peak_upper(forecasts_now, risk_days), on=KEY, how="left")
    thr_now = _levels(thresholds, gone)
    before, peak = gone["threshold"].to_numpy(float), gone["peak_upper"].to_numpy(float)
    reason = np.select(
        [
            np.isnan(peak),
            (before != thr_now) & ~np.isnan(thr_now) & (peak >= before),
            peak < thr_now,
        ],
        [REASON_LEFT, REASON_THRESHOLD, REASON_FELL],
        "",
    )
    gone = gone.assign(
        last_flagged=gone["vintage"],
        resolved_in=v,
        threshold_before=gone["threshold"],
        threshold_now=thr_now,
        reason=pd.Series(reason, index=gone.index).replace("", pd.NA),
    )
    return conform(gone.sort_values(KEY, kind="stable"), RISK_RESOLVED)
