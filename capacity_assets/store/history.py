"""Reading a batch's published track record (forecast_history, risk_history) from the database.

The track-record assets need the vintages already kept, which Dagster cannot hand them (an asset
with static partitions cannot depend on its own earlier rows), so they read them here, one batch at
a time, under the shared lock like any reader. Arrow keeps repeated strings shared: a batch's 26
vintages of 400 series take a quarter of the memory a plain fetch would.
"""
from __future__ import annotations

import os

import pandas as pd

from capacity_assets.schema import conform, empty, quote_ident
from capacity_assets.store.db import connect, db_lock, fetch_frame, table_exists


def read_batch(db: str, table: str, batch: str, columns: dict[str, str]) -> pd.DataFrame:
    """``table``'s published rows of ``batch`` with the contract ``columns`` (empty when there are none)."""
    if not os.path.exists(db):
        return empty(columns)
    with db_lock(db, exclusive=False):
        conn = connect(db, read_only=True)
        try:
            if not table_exists(conn, "main", table):
                return empty(columns)
            frame = fetch_frame(conn, f"select * from main.{quote_ident(table)} where batch = ?", [batch])
        finally:
            conn.close()
    return conform(frame, columns) if len(frame) else empty(columns)
