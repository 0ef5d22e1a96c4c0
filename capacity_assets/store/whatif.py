"""What a what-if needs from the store: the published golden record, its hierarchy, the last week
of each series' history, the published risk list and plan (the baseline) and the settings they were
made with, read under one lock so they come from one pipeline state; and, for the assets, the
published golden record of a few servers."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from capacity_assets.schema import FORECASTS, HIERARCHY, PROCESSED_DATA, conform, quote_ident
from capacity_assets.store.db import reading
from capacity_assets.store.queries import query, tables

REQUIRED = ("forecasts", "business_hierarchy", "processed_data", "risk_exceptions", "capacity_plan")
LAST_WEEK_DAYS = 7  # risk.breaches' already-above rule reads each series' last observed week
_FORECAST_COLUMNS = ", ".join(quote_ident(c) for c in FORECASTS)
# a per-series maximum and a join: a window over processed_data (every day of every series) would
# sort the whole table, several seconds on a 2,000-server store
_LAST_WEEK = (
    "with last as (select batch, server_id, resource, max(ds) as last_ds from processed_data "
    "where server_id in ({marks}) group by batch, server_id, resource) "
    "select p.batch, p.server_id, p.resource, p.ds, p.y, p.filled from processed_data p "
    "join last l on p.batch = l.batch and p.server_id = l.server_id and p.resource = l.resource "
    f"where p.server_id in ({{marks}}) and p.ds > l.last_ds - interval '{LAST_WEEK_DAYS} days'"
)


class NothingToCompare(LookupError):
    """The store has no published results to put a scenario on."""


def read_published(db: str, involved: Callable[[dict], set[str]]) -> dict[str, pd.DataFrame]:
    """{fleet, hierarchy, risk, plan, ledger, forecasts, actuals} as published, under one lock.
    ``fleet``: each forecast server's first and last forecast day. ``involved`` is told those frames
    and returns the servers a what-if can change: only their golden record and last week are read
    (the rest keep their published results), so the cost follows the scenarios, not the fleet.
    NothingToCompare when a table is missing."""
    have = tables(db)
    missing = [t for t in REQUIRED if t not in have]
    if missing:
        raise NothingToCompare(
            f"{db} has no {', '.join(missing)} table yet: run `capacity run` (or `capacity demo`) "
            "first"
        )
    with reading(db) as conn:
        frames = {
            name: conn.execute(sql).fetchdf()
            for name, sql in {
                "fleet": "select server_id, min(ds) as first_day, max(ds) as last_day "
                "from forecasts group by server_id",
                "hierarchy": "select * from business_hierarchy",
                "risk": "select * from risk_exceptions",
                "plan": "select * from capacity_plan",
                "ledger": "select settings from batch_ledger"
                if "batch_ledger" in have
                else "select cast(null as varchar) as settings where false",
            }.items()
        }
        if frames["fleet"].empty:  # a file naming unknown servers would pass unchecked
            raise NothingToCompare(
                f"{db} has no published forecasts yet: run `capacity run` (or `capacity demo`) "
                "first"
            )
        frames["hierarchy"] = conform(frames["hierarchy"], HIERARCHY, extra=True)
        servers = sorted(involved(frames))
        marks = ", ".join("?" for _ in servers) or "null"
        frames["forecasts"] = conform(
            conn.execute(
                f"select {_FORECAST_COLUMNS} from forecasts where server_id in ({marks})", servers
            ).fetchdf(),
            FORECASTS,
        )
        frames["actuals"] = conform(
            conn.execute(_LAST_WEEK.format(marks=marks), servers * 2).fetchdf(), PROCESSED_DATA
        )
    return frames


def read_forecasts(db: str, servers) -> pd.DataFrame:
    """The published golden record of ``servers`` (empty when none is published)."""
    servers = sorted({str(s) for s in servers})
    if not servers or "forecasts" not in tables(db):
        return conform(pd.DataFrame({c: [] for c in FORECASTS}), FORECASTS)
    marks = ", ".join("?" for _ in servers)
    frame = query(
        db, f"select {_FORECAST_COLUMNS} from forecasts where server_id in ({marks})", servers
    )
    return conform(frame, FORECASTS)
