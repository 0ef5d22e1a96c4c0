"""forecast_history: every run's golden record kept as a vintage, so it can be scored later.

A vintage is one batch's golden record, keyed by ``vintage`` (its first forecast day) and the
``run_id`` that produced it. The asset outputs a batch's whole history every run (the IO manager
replaces the batch), so both functions are idempotent: re-running the same data replaces its
vintage, and retention keeps the newest ``keep`` vintages per batch.

Compact form (FORECAST_HISTORY): only the columns scoring needs; forecasts as float32 rounded to
FORECAST_DECIMALS (0.01 percentage point: a hundredth of a point is far below any measurement's
precision and any forecast's error, while the round values compress well in DuckDB); rows sorted by
batch, vintage, series and day, so the repeated strings and consecutive dates compress to runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.risk.thresholds import DEFAULT_THRESHOLD, per_series
from capacity_assets.schema import BATCH_SERIES_KEY, SERIES_KEY, conform, empty
from capacity_assets.schema import VINTAGE_SERIES_KEY as SERIES
from capacity_assets.track.contracts import FORECAST_HISTORY

KEEP_VINTAGES = 26  # CAPACITY_KEEP_VINTAGES: half a year of weekly runs
FORECAST_DECIMALS = 2  # percentage points of utilisation kept: 0.01 pp
ORDER = SERIES + ["ds"]


def vintage_of(forecasts: pd.DataFrame) -> pd.DataFrame:
    """(batch, vintage, run_id) of a golden record, one row per batch.

    The vintage is the first forecast day of most series (ties: the latest). Every series whose
    data is current starts the day after the batch's last data day; a series that stopped
    reporting starts earlier and must not move the key (nor should one bad clock in the future).
    """
    if forecasts.empty:
        return pd.DataFrame(
            {
                "batch": pd.Series(dtype="string"),
                "vintage": pd.Series(dtype="datetime64[ns]"),
                "run_id": pd.Series(dtype="string"),
            }
        )
    starts = forecasts.groupby(BATCH_SERIES_KEY, observed=True)["ds"].min().rename("vintage")
    counts = (
        starts.reset_index()
        .groupby(["batch", "vintage"], observed=True)
        .size()
        .rename("n")
        .reset_index()
    )
    counts = counts.sort_values(
        ["batch", "n", "vintage"], ascending=[True, False, False], kind="stable"
    )
    out = counts.drop_duplicates("batch")[["batch", "vintage"]]
    runs = (
        forecasts.groupby("batch", observed=True)["run_id"]
        .agg(lambda s: s.mode().iloc[0] if s.notna().any() else pd.NA)
        .rename("run_id")
    )
    out = out.merge(runs.reset_index(), on="batch", how="left")
    return (
        out.astype({"batch": "string", "run_id": "string"})
        .assign(
            vintage=lambda d: pd.to_datetime(d["vintage"]).dt.normalize().astype("datetime64[ns]")
        )
        .reset_index(drop=True)
    )


def as_vintage(forecasts: pd.DataFrame, thresholds=DEFAULT_THRESHOLD) -> pd.DataFrame:
    """The golden record (schema.FORECASTS) as forecast_history rows (FORECAST_HISTORY).

    ``thresholds``: the per-series thresholds this run judged risk against, in any form
    ``risk.thresholds.per_series`` takes (a number, or ``levels_table``'s frame): recorded so that
    later risk-call scoring uses the line the call was made against."""
    if forecasts.empty:
        return empty(FORECAST_HISTORY)
    key = vintage_of(forecasts)
    rows = forecasts.drop(columns=["run_id", "threshold"], errors="ignore").merge(
        key, on="batch", how="inner"
    )
    series = rows[SERIES_KEY].drop_duplicates()
    levels = series.assign(threshold=per_series(thresholds, series, "threshold").to_numpy())
    rows = rows.merge(levels, on=SERIES_KEY, how="left")
    for c in ("yhat", "yhat_lower", "yhat_upper"):
        rows[c] = np.round(rows[c].to_numpy(dtype="float64"), FORECAST_DECIMALS)
    rows = conform(rows, FORECAST_HISTORY)
    return rows.sort_values(ORDER, kind="stable").reset_index(drop=True)


def append_vintage(
    history: pd.DataFrame, new_vintage_rows: pd.DataFrame, keep: int = KEEP_VINTAGES
) -> pd.DataFrame:
    """History with ``new_vintage_rows`` added: a vintage already present for the batch is replaced
    (a re-run of the same data must not count twice), then only the newest ``keep`` vintages of each
    batch stay. Batches absent from ``new_vintage_rows`` are only trimmed. Idempotent.

    ``history`` may come straight from the IO manager (object text, microsecond dates). A batch's
    history is millions of rows, so the rows to keep are chosen on the few (batch, vintage) pairs
    and copied once, then sorted and conformed once."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (CAPACITY_KEEP_VINTAGES), got {keep}")
    new = (
        conform(new_vintage_rows, FORECAST_HISTORY)
        if len(new_vintage_rows)
        else empty(FORECAST_HISTORY)
    )
    old = history if len(history) else empty(FORECAST_HISTORY)
    old_pairs, new_pairs = _pairs(old), _pairs(new)
    replaced = old_pairs.isin(new_pairs)  # the re-run's vintage is replaced whole
    pairs = pd.concat(
        [
            old_pairs[~replaced].unique().to_frame(index=False, name=["batch", "vintage"]),
            new_pairs.unique().to_frame(index=False, name=["batch", "vintage"]),
        ],
        ignore_index=True,
    )
    kept = _pairs(kept_vintages(pairs, keep))
    parts = [
        p
        for p in (
            old.loc[~replaced & old_pairs.isin(kept), list(FORECAST_HISTORY)],
            new[new_pairs.isin(kept)],
        )
        if len(p)
    ]
    del old_pairs, replaced
    if not parts:
        return empty(FORECAST_HISTORY)
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    del parts
    out = out.sort_values(ORDER, kind="stable", ignore_index=True)
    return conform(out, FORECAST_HISTORY)


def _pairs(df: pd.DataFrame) -> pd.MultiIndex:
    """(batch, vintage) of every row, comparable whatever the input's text and date dtypes."""
    return pd.MultiIndex.from_arrays(
        [
            df["batch"].astype(str).to_numpy(),
            pd.to_datetime(df["vintage"]).to_numpy("datetime64[ns]"),
        ]
    )


def kept_vintages(history: pd.DataFrame, keep: int = KEEP_VINTAGES) -> pd.DataFrame:
    """(batch, vintage) of the newest ``keep`` vintages of each batch in ``history``."""
    v = history[["batch", "vintage"]].drop_duplicates()
    rank = v.groupby("batch", observed=True)["vintage"].rank(method="first", ascending=False)
    return v[rank <= keep].reset_index(drop=True)


def vintages_of(history: pd.DataFrame) -> pd.DataFrame:
    """(batch, vintage, run_id) of every vintage in a forecast_history, oldest first: the register
    that lifecycle and risk-call functions use (a vintage that flagged nothing is still a vintage)."""
    cols = [c for c in ("batch", "vintage", "run_id") if c in history.columns]
    return (
        history[cols]
        .drop_duplicates()
        .sort_values(["batch", "vintage"], kind="stable")
        .reset_index(drop=True)
    )
