"""From daily values to series an engine can fit: a complete calendar, gaps filled, short ones set aside.

Gaps are filled by linear interpolation between the neighbouring observed days and flagged
(``filled``), so engines see a regular calendar while scoring can ignore invented days. Training
days (up to each series' backtest cut) are filled from training days only, carrying the last one
forward across the cut: a value from the backtest period leaking into the fit would flatter the
backtest the tournament judges by. A series with too few measured days to backtest is kept in
processed_data (its history is real) but listed in skipped_series with the reason, and never forecast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.schema import PROCESSED_DATA, SKIPPED_SERIES, conform, empty

SHORT_GAP_DAYS = 7  # gaps up to this long are routine (missed scrapes); longer ones are reported


def complete_calendar(
    daily: pd.DataFrame, backtest_months: int | None = None
) -> tuple[pd.DataFrame, dict]:
    """Every day from each series' first to last observed day; returns (frame, stats). With
    ``backtest_months``, days up to each series' backtest cut are filled from training days only."""
    if daily.empty:
        return daily.assign(filled=pd.Series(dtype=bool)), {
            "days_filled": 0,
            "long_gaps": 0,
            "series": 0,
            "long_gap_example": "",
        }
    daily = daily.sort_values(["server_id", "resource", "ds"])
    keys = daily.groupby(["server_id", "resource"], sort=False)["ds"].agg(["min", "max"])
    lengths = ((keys["max"] - keys["min"]).dt.days + 1).to_numpy()
    starts = keys["min"].to_numpy().astype("datetime64[D]")
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    calendar = pd.DataFrame(
        {
            "server_id": np.repeat(keys.index.get_level_values(0).to_numpy(), lengths),
            "resource": np.repeat(keys.index.get_level_values(1).to_numpy(), lengths),
            "ds": (np.repeat(starts, lengths) + offsets.astype("timedelta64[D]")).astype(
                "datetime64[ns]"
            ),
        }
    )
    full = calendar.merge(
        daily[["server_id", "resource", "ds", "y"]], how="left", on=["server_id", "resource", "ds"]
    )
    missing = full["y"].isna().to_numpy()
    # runs of missing days, to tell routine gaps from outages
    run_start = missing & ~np.r_[False, missing[:-1]]
    run_id = np.cumsum(run_start) * missing
    run_len = np.bincount(run_id)[run_id] * missing if missing.any() else np.zeros(len(full), int)
    by_series = full.groupby(["server_id", "resource"], sort=False)["y"]
    interpolated = by_series.transform(
        lambda s: s.interpolate(method="linear", limit_area="inside")
    )
    if backtest_months:
        last = np.repeat((keys["max"] - pd.DateOffset(months=backtest_months)).to_numpy(), lengths)
        train = (full["ds"] <= last).to_numpy()
        y_train = full["y"].where(train)
        from_training = y_train.groupby(
            [full["server_id"], full["resource"]], sort=False
        ).transform(lambda s: s.interpolate(method="linear", limit_area="inside").ffill())
        interpolated = interpolated.where(~train, from_training)
    full["y"] = interpolated
    full["filled"] = missing
    long_gaps = np.flatnonzero((run_len > SHORT_GAP_DAYS) & run_start)
    first = long_gaps[0] if len(long_gaps) else None
    stats = {
        "series": int(len(keys)),
        "days_filled": int(missing.sum()),
        "long_gaps": int(len(long_gaps)),
        # the first one, so the data owner can look it up in the export
        "long_gap_example": ""
        if first is None
        else (
            f"{full['server_id'].iat[first]}/{full['resource'].iat[first]}: {int(run_len[first])} days "
            f"from {pd.Timestamp(full['ds'].iat[first]):%Y-%m-%d}"
        ),
    }
    return full, stats


def processed_frame(full: pd.DataFrame, batch: str) -> pd.DataFrame:
    out = full.assign(batch=batch)
    out["y"] = out["y"].clip(0.0, 100.0)
    return conform(out, PROCESSED_DATA)


def _measured_spans(processed: pd.DataFrame) -> pd.DataFrame:
    """Per series: first and last measured (not gap-filled) day and the number of measured days."""
    measured = processed[~processed["filled"].fillna(False).astype(bool)]
    return (
        measured.groupby(["batch", "server_id", "resource"], sort=True, observed=True)
        .agg(min=("ds", "min"), max=("ds", "max"), count=("ds", "size"))
        .reset_index()
    )


def _skipped(spans: pd.DataFrame, reasons) -> pd.DataFrame:
    return conform(
        pd.DataFrame(
            {
                "batch": spans["batch"],
                "server_id": spans["server_id"],
                "resource": spans["resource"],
                "first_ds": spans["min"],
                "last_ds": spans["max"],
                "days": spans["count"].astype("int64"),
                "reason": list(reasons),
            }
        ),
        SKIPPED_SERIES,
    )


def short_series(processed: pd.DataFrame, min_days: int) -> pd.DataFrame:
    """Series with fewer than ``min_days`` measured (not gap-filled) days, with the reason they are not
    forecast: interpolated days are our own invention and prove no history."""
    if processed.empty:
        return empty(SKIPPED_SERIES)
    spans = _measured_spans(processed)
    short = spans[spans["count"] < min_days]
    return _skipped(
        short,
        [
            f"history of {n} measured days is shorter than the {min_days} days needed "
            f"(backtest months plus 6 months of training)"
            for n in short["count"]
        ],
    )


STALE_DAYS = 30  # a series without a measured day in the data's last this many days is not forecast


def stale_series(processed: pd.DataFrame, newest, stale_days: int = STALE_DAYS) -> pd.DataFrame:
    """Series whose last measured day is over ``stale_days`` before ``newest`` (the newest day of the
    run's data), with the reason: a server that stopped reporting or left the fleet would otherwise be
    forecast from its last day, with breach dates already past, and never leave the risk list."""
    if processed.empty or pd.isna(newest):
        return empty(SKIPPED_SERIES)
    spans, newest = _measured_spans(processed), pd.Timestamp(newest)
    old = spans[spans["max"] < newest - pd.Timedelta(days=stale_days)]
    return _skipped(
        old,
        [
            f"no measured day since {last:%Y-%m-%d}, {(newest - last).days} days before the newest "
            f"data ({newest:%Y-%m-%d}): stopped reporting or left the fleet"
            for last in old["max"]
        ],
    )
