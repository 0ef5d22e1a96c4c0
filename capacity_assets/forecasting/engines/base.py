"""What every forecasting engine shares: its configuration, the backtest/future split, and the
interface ``registry.run`` calls (``EngineModule``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import pandas as pd


@dataclass(frozen=True)
class ForecastConfig:
    backtest_months: int = 4
    horizon_days: int = 180
    interval: float = 0.80  # central prediction interval width for every model
    min_train_months: int = 6
    seed: int = 0
    # extra origins (months before the end) whose fits forecast to the end of history, besides the
    # backtest's: the tournament selects on the errors pooled over every origin (one origin is a
    # noisy judge); () = the backtest alone. One window: as accurate as (3, 2) on the demo family
    # for less than half the extra fitting (issue 26, benchmarks/README.md)
    windows: tuple[int, ...] = (2,)


def backtest_cutoff(last_ds: pd.Timestamp, cfg: ForecastConfig) -> pd.Timestamp:
    """Last training day of the backtest fit: ``backtest_months`` calendar months before the end."""
    return pd.Timestamp(last_ds) - pd.DateOffset(months=cfg.backtest_months)


def window_configs(cfg: ForecastConfig) -> list[tuple[str, ForecastConfig]]:
    """(split, config) of every out-of-sample fit, earliest origin first: the backtest, then each
    window as a backtest of its own months (every one forecasts to the end of history)."""
    months = [m for m in cfg.windows if 0 < m < cfg.backtest_months]
    return [("backtest", cfg)] + [
        ("window", replace(cfg, backtest_months=m)) for m in sorted(set(months), reverse=True)
    ]


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


def with_origin(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with an ``origin`` everywhere: where it is missing (an engine or a caller that
    predates windows), the day before the first row of its series and split, which is the fit's
    last day for a backtest or a future."""
    have = rows["origin"] if "origin" in rows.columns else pd.Series(pd.NaT, index=rows.index)
    if len(rows) == 0 or have.notna().all():
        return rows if "origin" in rows.columns else rows.assign(origin=have)
    first = (
        pd.to_datetime(rows["ds"])
        .groupby([rows["server_id"], rows["resource"], rows["split"]], sort=False)
        .transform("min")
    )
    return rows.assign(origin=pd.to_datetime(have).fillna(first - pd.Timedelta(days=1)))


def on_days_of(actuals: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``actuals`` from the first to the last day of ``rows`` (a backtest): the only ones a join on
    ``ds`` can match, so the rest of the history (most of it) is never merged."""
    if rows.empty:
        return actuals
    days = actuals["ds"]
    return actuals[(days >= rows["ds"].min()) & (days <= rows["ds"].max())]


@runtime_checkable
class EngineModule(Protocol):
    """The one thing ``registry.run`` needs from an engine module (prophet, challenger, ets, naive).

    Written down because the registry imports engines by module path, so nothing else states the
    contract a new engine must meet. Everything else is deliberately not here: an engine's name is
    its ``registry.ENGINES`` key and its description and colour live in that entry; calibration,
    the naive fallback, clipping and the ENGINE_RESULTS contract are ``registry.run``'s, so no
    engine can get them wrong. A combiner (``combination``) fits nothing and has ``combine`` instead.
    """

    def predict(
        self, history: pd.DataFrame, cfg: ForecastConfig, log: logging.Logger | None = None
    ) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
        """``history``: one batch's series (server_id, resource, ds, y; one row per day). ``log``
        may be any logger with ``info`` (Dagster's ``context.log``). Returns RAW_RESULTS rows, raw
        (uncalibrated, unclipped): per series the backtest rows (split='backtest', the days after
        ``backtest_cutoff``, from a fit on the days up to it) and the future rows (split='future',
        ``future_dates``, from a refit on all history); and ``{(server_id, resource): reason}`` for
        the series it could not fit, which ``run`` hands to the naive fallback. Raising fails the
        whole batch: an engine reports a bad series in that dict instead."""
        ...
