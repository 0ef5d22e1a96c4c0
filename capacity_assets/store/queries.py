"""Reading the pipeline's tables from outside Dagster (CLI, dashboard): short and read-only.

DuckDB: a reader holds the file's shared lock only for the query, so a pipeline run waiting to
write is delayed by at most one query and never fails because a dashboard is open. PostgreSQL: a
reader sees one snapshot and never waits.
"""

from __future__ import annotations

import pandas as pd

from capacity_assets.schema import quote_ident
from capacity_assets.store.db import exists, reading, table_names


def query(db: str, sql: str, params: list | None = None, timeout: float = 60) -> pd.DataFrame:
    return query_many(db, {"result": (sql, params or [])}, timeout)["result"]


def tables(db: str) -> set[str]:
    if not exists(db):
        return set()
    with reading(db) as conn:
        return table_names(conn, "main")


def read_table(db: str, table: str) -> pd.DataFrame | None:
    """A whole table, or None when it does not exist yet."""
    if table not in tables(db):
        return None
    return query(db, f"select * from main.{quote_ident(table)}")


def query_many(
    db: str, statements: dict[str, tuple[str, list]], timeout: float = 60
) -> dict[str, pd.DataFrame]:
    """Several queries under one shared lock and one connection, so a view's numbers come from the
    same pipeline state (a batch cannot commit between the header and the heatmap) and a page pays
    for one open instead of one per query."""
    with reading(db, timeout) as conn:
        return {
            name: conn.execute(sql, params or []).fetchdf()
            for name, (sql, params) in statements.items()
        }
