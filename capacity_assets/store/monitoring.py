"""What the monitoring export reads (``export.prometheus``): the published tables, in one snapshot.

One read (``queries.query_many``: one connection, DuckDB's shared lock, PostgreSQL's one snapshot),
so a batch published meanwhile is in every part of the file or in none. Only the forecast days the
file shows leave the database, not the whole golden record.
"""

from __future__ import annotations

import pandas as pd

from capacity_assets.store.queries import query_many, tables

# forecast day 1 is the first day of each series' golden record (the day after its history)
_POINTS = """
select batch, server_id, resource, day, yhat, yhat_upper, trust from (
    select batch, server_id, resource, yhat, yhat_upper, trust,
           cast(ds - min(ds) over (partition by batch, server_id, resource) as integer) + 1 as day
    from main.forecasts
) f where day in ({marks})
"""
_WANTED = {
    "plan": (
        "capacity_plan",
        "select batch, server_id, resource, department, app_manager, threshold "
        "from main.capacity_plan",
    ),
    "risk": (
        "risk_exceptions",
        "select batch, server_id, resource, department, app_manager, first_breach_date, "
        "days_to_breach from main.risk_exceptions",
    ),
    "ledger": ("batch_ledger", "select batch, published_at from main.batch_ledger"),
}
_EMPTY = {
    "plan": ["batch", "server_id", "resource", "department", "app_manager", "threshold"],
    "risk": [
        "batch",
        "server_id",
        "resource",
        "department",
        "app_manager",
        "first_breach_date",
        "days_to_breach",
    ],
    "ledger": ["batch", "published_at"],
}


class NothingPublished(LookupError):
    """The store holds no golden record yet."""


def published(db: str, days: tuple[int, ...]) -> dict[str, pd.DataFrame]:
    """{points, plan, risk, ledger}: the golden record on forecast days 1 and ``days`` (batch,
    server_id, resource, day, yhat, yhat_upper, trust), capacity_plan's owners and thresholds,
    risk_exceptions' first breach dates and batch_ledger's publication times. A table not written yet
    (an older store) reads as empty; no golden record raises ``NothingPublished``."""
    have = tables(db)
    if "forecasts" not in have:
        raise NothingPublished(
            f"{db} has no published forecasts yet: run `capacity run` (or `capacity demo`) first"
        )
    wanted = sorted({1, *days})
    statements = {"points": (_POINTS.format(marks=", ".join("?" for _ in wanted)), wanted)}
    statements.update({name: (sql, []) for name, (table, sql) in _WANTED.items() if table in have})
    frames = query_many(db, statements)
    for name, columns in _EMPTY.items():
        frames.setdefault(name, pd.DataFrame(columns=columns))
    if not len(frames["points"]):
        raise NothingPublished(
            f"{db} has no published forecasts yet (the forecasts table is empty): run "
            "`capacity run` first"
        )
    return frames
