"""What every forecasting engine shares: the configuration and the backtest/future split.

An engine is a module with ``NAME`` and ``forecast(history, cfg, log=None) -> DataFrame``:
``history`` holds one batch's series (columns server_id, resource, ds, y; one row per day, complete
calendar), the result holds schema.ENGINE_RESULTS rows: for every series the backtest rows
(split='backtest', the ds of the last ``backtest_months`` of history, from a fit on everything
before) and the future rows (split='future', ``horizon_days`` days after the last history day,
from a refit on all history).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class ForecastConfig:
    backtest_months: int = 4
    horizon_days: int = 180
    interval: float = 0.80  # central prediction interval width for every model
    min_train_months: int = 6
    seed: int = 0


def backtest_cutoff(last_ds: pd.Timestamp, cfg: ForecastConfig) -> pd.Timestamp:
    """Last training day of the backtest fit: ``backtest_months`` calendar months before the end."""
    return pd.Timestamp(last_ds) - pd.DateOffset(months=cfg.backtest_months)


def split_series(series: pd.DataFrame, cfg: ForecastConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, backtest) of one series sorted by ds."""
    cutoff = backtest_cutoff(series["ds"].max(), cfg)
    return series[series["ds"] <= cutoff], series[series["ds"] > cutoff]


def future_dates(last_ds: pd.Timestamp, cfg: ForecastConfig) -> pd.DatetimeIndex:
    return pd.date_range(
        pd.Timestamp(last_ds) + pd.Timedelta(days=1), periods=cfg.horizon_days, freq="D"
    )


def min_history_days(cfg: ForecastConfig) -> int:
    """Shortest history that can be backtested: approx. months in days (30.44 days a month)."""
    return int(round((cfg.backtest_months + cfg.min_train_months) * 30.44))


def on_days_of(actuals: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``actuals`` from the first to the last day of ``rows`` (a backtest): the only ones a join on
    ``ds`` can match, so the rest of the history (most of it) is never merged."""
    if rows.empty:
        return actuals
    days = actuals["ds"]
    return actuals[(days >= rows["ds"].min()) & (days <= rows["ds"].max())]
