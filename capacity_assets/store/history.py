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

import pandas as pd

from capacity_assets.schema import conform, empty, quote_ident
from capacity_assets.store.db import exists, fetch_frame, reading, table_exists, writing

# one row per batch, vintage and series of forecast_history: what risk calls and lifecycles read
SERIES_VINTAGES = {
    "batch": "string",
    "vintage": "datetime64[ns]",
    "run_id": "string",
    "server_id": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "threshold": "float64",
}


EVERY_ROW = "select * from {table} where batch in ({batches})"


def _read(db: str, table: str, sql: str, batches: list[str]) -> pd.DataFrame | None:
    """``sql`` (``{table}`` and ``{batches}`` filled in) on the published ``table``; None when there is none."""
    if not batches or not exists(db):
        return None
    with reading(db) as conn:
        if not table_exists(conn, "main", table):
            return None
        marks = ", ".join("?" for _ in batches)
        return fetch_frame(
            conn, sql.format(table=f"main.{quote_ident(table)}", batches=marks), list(batches)
        )


def _by_batch(
    frame: pd.DataFrame | None, batches: list[str], columns: dict[str, str]
) -> dict[str, pd.DataFrame]:
    frame = empty(columns) if frame is None or frame.empty else conform(frame, columns)
    parts = {
        str(b): g.reset_index(drop=True)
        for b, g in frame.groupby("batch", sort=False, observed=True)
    }
    return {b: parts.get(b, empty(columns)) for b in batches}


def read_batch(db: str, table: str, batch: str, columns: dict[str, str]) -> pd.DataFrame:
    """``table``'s published rows of ``batch`` with the contract ``columns`` (empty when there are none)."""
    frame = _read(db, table, EVERY_ROW, [batch])
    return conform(frame, columns) if frame is not None and len(frame) else empty(columns)


def read_batches(
    db: str, table: str, batches: list[str], columns: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """``read_batch`` of every one of ``batches`` in one read: for the small tables (risk_history)."""
    return _by_batch(_read(db, table, EVERY_ROW, batches), batches, columns)


def read_series_vintages(db: str, batches: list[str]) -> dict[str, pd.DataFrame]:
    """forecast_history reduced to SERIES_VINTAGES (first forecast day, threshold) for ``batches``."""
    sql = (
        "select batch, vintage, run_id, server_id, resource, min(ds) as ds, min(threshold) as threshold "
        "from {table} where batch in ({batches}) group by batch, vintage, run_id, server_id, resource "
        "order by batch, vintage, run_id, server_id, resource"
    )
    return _by_batch(_read(db, "forecast_history", sql, batches), batches, SERIES_VINTAGES)


KEPT = ("forecast_history", "risk_history")  # the append tables: vintages outlive a batching


def rekey(db: str, batches: int) -> tuple[int, int]:
    """Move the kept vintages of servers that CAPACITY_BATCHES put in another batch to that batch, in
    one transaction, so the track record is neither lost with a batch key that no longer exists nor
    counted twice under two keys. Where a series' vintage is already kept under its new key (published
    by an earlier run under this batching), the copy under the old key goes. Returns (rows moved, old
    copies removed)."""
    from capacity_assets.inputs.batching import batch_of

    if not exists(db):
        return 0, 0
    with writing(db) as conn:
        tables = [t for t in KEPT if table_exists(conn, "main", t)]
        servers = sorted(
            {
                s
                for t in tables
                for (s,) in conn.execute(
                    f"select distinct server_id from main.{quote_ident(t)}"
                ).fetchall()
            }
        )
        home = pd.DataFrame({"server_id": servers, "home": [batch_of(s, batches) for s in servers]})
        conn.register("home", home)
        moved = removed = 0
        for t in tables:
            name = f"main.{quote_ident(t)}"
            removed += conn.execute(f"""delete from {name} as t using home h
                             where t.server_id = h.server_id and t.batch <> h.home
                               and exists (select 1 from {name} u where u.batch = h.home and u.vintage = t.vintage
                                           and u.server_id = t.server_id and u.resource = t.resource)""").fetchone()[
                0
            ]
            moved += conn.execute(f"""update {name} as t set batch = h.home from home h
                                      where t.server_id = h.server_id and t.batch <> h.home""").fetchone()[
                0
            ]
        conn.unregister("home")
        return moved, removed
