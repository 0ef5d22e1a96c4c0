"""No leakage across the backtest cut: training days are never filled from backtest values, and the
minimum-history rule counts measured days."""

import numpy as np
import pandas as pd

from capacity_assets.inputs import cleaning

END = pd.Timestamp("2025-10-31")


def daily(server, days: pd.DatetimeIndex, values) -> pd.DataFrame:
    return pd.DataFrame(
        {"server_id": server, "resource": "cpu", "ds": days, "y": np.asarray(values, float)}
    )


def test_a_gap_across_the_backtest_cut_is_filled_from_training_days_only():
    days = pd.date_range(END - pd.Timedelta(days=299), END)
    cut = END - pd.DateOffset(months=4)  # last training day
    y = np.where(days <= cut - pd.Timedelta(days=10), 10.0, 90.0)  # the backtest runs much hotter
    gap = (days > cut - pd.Timedelta(days=10)) & (
        days <= cut + pd.Timedelta(days=10)
    )  # 20 days lost
    frame = daily("a", days[~gap], y[~gap])
    full, _ = cleaning.complete_calendar(frame, backtest_months=4)
    train_filled = full[(full["ds"] <= cut) & full["filled"]]
    assert len(train_filled) == 10
    assert (train_filled["y"] == 10.0).all()  # carried forward, not pulled toward the backtest's 90
    bt_filled = full[(full["ds"] > cut) & full["filled"]]
    assert (
        len(bt_filled) == 10
        and bt_filled["y"].is_monotonic_increasing
        and bt_filled["y"].iloc[-1] < 90
    )
    # without the cut, interpolation across the whole gap is still available (and does lean on 90)
    plain, _ = cleaning.complete_calendar(frame)
    assert plain.loc[(plain["ds"] <= cut) & plain["filled"], "y"].max() > 40


def test_minimum_history_counts_measured_days_not_filled_ones():
    days = pd.date_range(END - pd.Timedelta(days=399), END)
    measured = days[::4]  # 100 measured days spread over 400 calendar days
    full, _ = cleaning.complete_calendar(daily("sparse", measured, np.full(len(measured), 30.0)), 4)
    processed = cleaning.processed_frame(full, "b0")
    skipped = cleaning.short_series(processed, min_days=304)
    assert list(skipped["server_id"]) == ["sparse"] and skipped["days"].iloc[0] == 100
    dense, _ = cleaning.complete_calendar(daily("dense", days, np.full(len(days), 30.0)), 4)
    assert cleaning.short_series(cleaning.processed_frame(dense, "b0"), 304).empty
