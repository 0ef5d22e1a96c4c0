"""Reading the published track record (forecast_history, risk_history) from the database.

The track-record assets need the vintages already kept, which Dagster cannot hand them (an asset
with static partitions cannot depend on its own earlier rows), so they read them here under the
shared lock like any reader. Arrow keeps repeated strings shared: a batch's 26 vintages of 400
series take a quarter of the memory a plain fetch would.

Only scoring forecasts needs every forecast day (``read_batch``, one batch at a time: 26 vintages
of a 100-server batch are 1.9 M rows). Risk calls and lifecycles need one row per vintage and
series, its first forecast day and threshold (``read_series_vintages``, 180 times fewer rows), so
those are read for all of a run's batches at once, like risk_history (``read_batches``).
"""
from __future__ import annotations

import os

import pandas as pd

from capacity_assets.schema import conform, empty, quote_ident
from capacity_assets.store.db import connect, db_lock, fetch_frame, table_exists

# one row per batch, vintage and series of forecast_history: what risk calls and lifecycles read
SERIES_VINTAGES = {
    "batch": "string", "vintage": "datetime64[ns]", "run_id": "string",
    "server_id": "string", "resource": "string", "ds": "datetime64[ns]", "threshold": "float64",
}


EVERY_ROW = "select * from {table} where batch in ({batches})"


def _read(db: str, table: str, sql: str, batches: list[str]) -> pd.DataFrame | None:
    """``sql`` (``{table}`` and ``{batches}`` filled in) on the published ``table``; None when there is none."""
    if not batches or not os.path.exists(db):
        return None
    with db_lock(db, exclusive=False):
        conn = connect(db, read_only=True)
        try:
            if not table_exists(conn, "main", table):
                return None
            marks = ", ".join("?" for _ in batches)
            return fetch_frame(conn, sql.format(table=f"main.{quote_ident(table)}", batches=marks), list(batches))
        finally:
            conn.close()


def _by_batch(frame: pd.DataFrame | None, batches: list[str], columns: dict[str, str]) -> dict[str, pd.DataFrame]:
    frame = empty(columns) if frame is None or frame.empty else conform(frame, columns)
    parts = {str(b): g.reset_index(drop=True) for b, g in frame.groupby("batch", sort=False, observed=True)}
    return {b: parts.get(b, empty(columns)) for b in batches}


def read_batch(db: str, table: str, batch: str, columns: dict[str, str]) -> pd.DataFrame:
    """``table``'s published rows of ``batch`` with the contract ``columns`` (empty when there are none)."""
    frame = _read(db, table, EVERY_ROW, [batch])
    return conform(frame, columns) if frame is not None and len(frame) else empty(columns)


def read_batches(db: str, table: str, batches: list[str], columns: dict[str, str]) -> dict[str, pd.DataFrame]:
    """``read_batch`` of every one of ``batches`` in one read: for the small tables (risk_history)."""
    return _by_batch(_read(db, table, EVERY_ROW, batches), batches, columns)


def read_series_vintages(db: str, batches: list[str]) -> dict[str, pd.DataFrame]:
    """forecast_history reduced to SERIES_VINTAGES (first forecast day, threshold) for ``batches``."""
    sql = ("select batch, vintage, run_id, server_id, resource, min(ds) as ds, min(threshold) as threshold "
           "from {table} where batch in ({batches}) group by all order by all")
    return _by_batch(_read(db, "forecast_history", sql, batches), batches, SERIES_VINTAGES)
