"""What a run's batches have already published in the track record, as the steps of this run must
see it: only the vintages kept once this run publishes, read once per asset for all its batches.

Dagster cannot hand an asset its own earlier partitions' rows, so these read them from the store.
"""

from __future__ import annotations

from functools import cached_property

import pandas as pd

from capacity_assets.schema import RISK_HISTORY
from capacity_assets.store.history import read_batches, read_series_vintages
from capacity_assets.track import lifecycle, vintages


def newest(cfg, frame: pd.DataFrame, current) -> pd.DataFrame:
    """A batch's published rows of an append table as they will be once this run publishes: only
    the newest CAPACITY_KEEP_VINTAGES vintages, counting this run's (``current``), so nothing this
    run drops is still scored or dated from."""
    vintage = pd.to_datetime(frame["vintage"])
    keep = sorted(
        {*pd.DatetimeIndex(vintage.unique()), *([current] if current is not None else [])},
        reverse=True,
    )[: cfg.keep_vintages]
    return frame[vintage.isin(keep)].reset_index(drop=True)


class Kept:
    """What the run's batches have published in the track record, read once per asset for all of
    them: risk_history, and forecast_history as one row per vintage and series (``store.history``)."""

    def __init__(self, cfg, batches: list[str]):
        self.cfg, self.batches = cfg, list(batches)

    @cached_property
    def _risk(self) -> dict[str, pd.DataFrame]:
        return read_batches(self.cfg.database, "risk_history", self.batches, RISK_HISTORY)

    @cached_property
    def _series(self) -> dict[str, pd.DataFrame]:
        return read_series_vintages(self.cfg.database, self.batches)

    def risk_history(self, batch: str, current) -> pd.DataFrame:
        return newest(self.cfg, self._risk[batch], current)

    def series_vintages(self, batch: str, current) -> pd.DataFrame:
        """forecast_history of the batch, one row per vintage and series (its first day, threshold)."""
        return newest(self.cfg, self._series[batch], current)


def current_vintage(forecasts: pd.DataFrame):
    key = vintages.vintage_of(forecasts)
    return None if key.empty else pd.Timestamp(key["vintage"].iloc[0])


def exception_status(
    cfg, batch: str, risk: pd.DataFrame, forecasts: pd.DataFrame, record: Kept | None = None
) -> pd.DataFrame:
    """risk_exceptions of a batch with its lifecycle: new or ongoing, flagged since when (the same
    column order whether or not the batch has exceptions)."""
    record = record or Kept(cfg, [batch])
    now = current_vintage(forecasts)
    return lifecycle.with_status(
        risk,
        record.risk_history(batch, now),
        now if now is not None else pd.Timestamp.now().normalize(),
        vintages.vintages_of(record.series_vintages(batch, now)),
    )
