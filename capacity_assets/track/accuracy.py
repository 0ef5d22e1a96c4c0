"""forecast_accuracy: each kept vintage scored against the actuals that have arrived since.

Definitions (the tournament's, so realised and backtest figures compare like with like):

* scored day: a day of the vintage's horizon with a measured actual in processed_data (``filled``
  false: an interpolated day is our own guess, not what happened).
* horizon day: 1 on the series' first forecast day in that vintage, which is the vintage day for
  every series whose data is current (a series that stopped reporting earlier starts, and counts,
  from its own day 1, as the risk window does).
* buckets: ``1-7``, ``8-30``, ``31-90``, ``91-180`` by horizon day, and ``all`` (every scored day,
  beyond day 180 too when CAPACITY_HORIZON_DAYS is longer). A bucket with no scored day has no row.
* mape = mean(|y - yhat| / max(|y|, MAPE_FLOOR)) * 100; wape = sum|y - yhat| / sum|y| * 100 (NaN
  when every actual is 0); bias = mean(yhat - y) in percentage points (positive: over-forecast);
  band_coverage = share (0..1) of days with yhat_lower <= y <= yhat_upper.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from capacity_assets.forecasting.tournament import MAPE_FLOOR
from capacity_assets.schema import PROCESSED_DATA, conform, empty
from capacity_assets.schema import VINTAGE_SERIES_KEY as SERIES
from capacity_assets.track.contracts import FORECAST_ACCURACY, HORIZON_BUCKETS
from capacity_assets.track.keys import day_numbers, match_days, series_codes, series_vintage_codes
from capacity_assets.track.vintages import FORECAST_DECIMALS

BUCKET_EDGES = (
    (1, 7),
    (8, 30),
    (31, 90),
    (91, 180),
)  # inclusive horizon days of HORIZON_BUCKETS[:-1]
DRIFT_FACTOR = 1.5  # CAPACITY_DRIFT_FACTOR
DRIFT_LAST = 4  # scored vintages per batch that the drift check looks at
DRIFT_MIN_DAYS = 7  # a series-vintage needs a week of scored days to count in the drift check


def measured(processed: pd.DataFrame) -> pd.DataFrame:
    """The measured (not gap-filled) days with a value: what the forecasts are judged against."""
    if processed.empty:
        return empty(PROCESSED_DATA)
    act = processed
    if "filled" in act.columns:
        act = act[~act["filled"].fillna(False).astype(bool)]
    return act[act["y"].notna()]


def score_vintages(history: pd.DataFrame, processed: pd.DataFrame) -> pd.DataFrame:
    """forecast_accuracy (FORECAST_ACCURACY): one row per batch, vintage, series and horizon bucket
    with at least one scored day; sorted by batch, vintage, series, bucket (in HORIZON_BUCKETS order).

    Vectorised on integer keys (keys.py): history rows are matched to actuals by a sorted search on
    (series, day), and the sums of every series-vintage and bucket are bincounts; ``all`` is the sum
    of the buckets plus the days beyond 180."""
    act = measured(processed)
    if history.empty or act.empty:
        return empty(FORECAST_ACCURACY)
    h_series, a_series = series_codes(history, act)
    sv, first = series_vintage_codes(history, h_series)
    h_day = day_numbers(history["ds"])
    start = pd.Series(h_day).groupby(sv).transform("min").to_numpy()
    rows, hits = match_days(h_series, h_day, a_series, day_numbers(act["ds"]))
    if len(rows) == 0:
        return empty(FORECAST_ACCURACY)
    y = act["y"].to_numpy(float)[hits]
    # float32 -> the stored decimals exactly, so y = 50.12 is inside an upper bound of 50.12
    fc = {
        c: np.round(history[c].to_numpy(float)[rows], FORECAST_DECIMALS)
        for c in ("yhat", "yhat_lower", "yhat_upper")
    }
    err = fc["yhat"] - y
    day = h_day[rows] - start[rows] + 1
    n_buckets = len(
        HORIZON_BUCKETS
    )  # the codes of the buckets, then `all`'s code for days past 180
    bucket = np.select(
        [(day >= lo) & (day <= hi) for lo, hi in BUCKET_EDGES],
        range(len(BUCKET_EDGES)),
        n_buckets - 1,
    )
    cell = sv[rows] * n_buckets + bucket
    size = len(first) * n_buckets

    def total(weights=None) -> np.ndarray:
        per = np.bincount(cell, weights=weights, minlength=size).reshape(-1, n_buckets)
        per[:, -1] = per.sum(axis=1)  # `all`: every bucket and the days past the last one
        return per.ravel()

    n = total()
    sums = {
        "ape": total(np.abs(err) / np.maximum(np.abs(y), MAPE_FLOOR)),
        "abs_err": total(np.abs(err)),
        "abs_y": total(np.abs(y)),
        "err": total(err),
        "inside": total(((y >= fc["yhat_lower"]) & (y <= fc["yhat_upper"])).astype(float)),
    }
    keep = np.flatnonzero(n > 0)
    n, sums = n[keep], {k: v[keep] for k, v in sums.items()}
    ids = history.iloc[first[keep // n_buckets]][SERIES + ["model"]].reset_index(drop=True)
    out = ids.assign(
        bucket=keep % n_buckets,
        horizon_bucket=np.asarray(HORIZON_BUCKETS, dtype=object)[keep % n_buckets],
        days_scored=n.astype(np.int64),
        mape=sums["ape"] / n * 100,
        wape=np.where(
            sums["abs_y"] > 0,
            sums["abs_err"] / np.where(sums["abs_y"] > 0, sums["abs_y"], 1) * 100,
            np.nan,
        ),
        bias=sums["err"] / n,
        band_coverage=sums["inside"] / n,
    )
    out = out.sort_values(SERIES + ["bucket"], kind="stable")
    return conform(out, FORECAST_ACCURACY)


def backtest_mape_by_batch(champions: pd.DataFrame) -> pd.Series:
    """Mean champion (backtest) MAPE of each batch: the statistic batch_drift compares with."""
    return champions.groupby("batch", observed=True)["champion_mape"].mean()


def batch_drift(
    accuracy: pd.DataFrame,
    backtest_mape_by_batch: Mapping | pd.Series,
    factor: float = DRIFT_FACTOR,
    last: int = DRIFT_LAST,
    min_days: int = DRIFT_MIN_DAYS,
) -> tuple[bool, dict]:
    """Has a batch's forecast got worse in production than its backtest promised?

    Realised MAPE of a batch = the mean of its series' ``all``-bucket MAPEs over its ``last`` newest
    scored vintages, every series-vintage weighing the same (the statistic of
    ``backtest_mape_by_batch``: a mean of series MAPEs). A series-vintage counts once it has
    ``min_days`` scored days, and a vintage is scored once one of its series counts, so a
    vintage a day old does not decide. The batch drifts when realised > ``factor`` x backtest.
    Batches without a backtest MAPE or without a scored vintage are listed, never failed.

    The newest vintages are scored over short horizons only, which are easier than the backtest's
    months: the check is conservative (a drift it reports is real).
    """
    backtest = pd.Series(backtest_mape_by_batch, dtype="float64")
    a = accuracy[(accuracy["horizon_bucket"] == "all") & (accuracy["days_scored"] >= min_days)]
    v = a[["batch", "vintage"]].drop_duplicates()
    recent = v[
        v.groupby("batch", observed=True)["vintage"].rank(method="first", ascending=False) <= last
    ]
    a = a.merge(recent, on=["batch", "vintage"], how="inner")
    per = a.groupby("batch", observed=True).agg(
        realised_mape=("mape", "mean"),
        series_vintages=("mape", "size"),
        vintages=("vintage", "nunique"),
        from_vintage=("vintage", "min"),
        to_vintage=("vintage", "max"),
    )
    per["backtest_mape"] = backtest.reindex(per.index.astype(str)).to_numpy()
    per["ratio"] = per["realised_mape"] / per["backtest_mape"]
    per["drifted"] = (
        (per["realised_mape"] > factor * per["backtest_mape"]).fillna(False).astype(bool)
    )
    rows = [
        {
            "batch": str(b),
            "realised_mape": round(float(r.realised_mape), 2),
            "backtest_mape": None if pd.isna(r.backtest_mape) else round(float(r.backtest_mape), 2),
            "ratio": None if pd.isna(r.ratio) else round(float(r.ratio), 3),
            "vintages": int(r.vintages),
            "series_vintages": int(r.series_vintages),
            "from_vintage": f"{r.from_vintage:%Y-%m-%d}",
            "to_vintage": f"{r.to_vintage:%Y-%m-%d}",
            "drifted": bool(r.drifted),
        }
        for b, r in per.sort_index().iterrows()
    ]
    drifted = [r["batch"] for r in rows if r["drifted"]]
    details = {
        "factor": float(factor),
        "last": int(last),
        "min_days": int(min_days),
        "batches": rows,
        "drifted": drifted,
        "no_backtest": [r["batch"] for r in rows if r["backtest_mape"] is None],
        "not_scored_yet": sorted(set(map(str, backtest.index)) - set(map(str, per.index))),
    }
    return not drifted, details
