"""Staged publication of a batch: every table of a batch is replaced together, or none is.

A run stages each partitioned output in the ``staging`` schema (rows tagged with its run id, and a
manifest row per batch and table). Once it has staged every table it was asked for, ``publish``
replaces that batch in all main tables in one transaction. Readers therefore see, per batch, either
the previous run's complete results or the new run's, across every table. Plain DuckDB SQL on the
caller's connection and transaction: no Dagster here.
"""
from __future__ import annotations

from capacity_assets.schema import quote_ident
from capacity_assets.store.db import table_exists

STAGING = "staging"
WRITES = f"{STAGING}._writes"  # manifest: which tables a run has staged for a batch


def columns(conn, schema: str, table: str) -> list[str]:
    return [c for (c,) in conn.execute("select column_name from duckdb_columns() where schema_name = ? and "
                                       "table_name = ? order by column_index", [schema, table]).fetchall()]


def stage(conn, table: str, select: str, run_id: str, batches: list[str], column: str = "batch") -> None:
    """Stage ``select``'s rows (registered as a relation by the caller) for ``batches`` of ``table``."""
    stage_table = f"{STAGING}.{quote_ident(table)}"
    marks = ", ".join("?" for _ in batches)
    conn.execute(f"create schema if not exists {STAGING}").fetchall()
    conn.execute(f"create table if not exists {WRITES} (run_id varchar, batch varchar, table_name varchar)").fetchall()
    cols = [d[0] for d in conn.execute(f"select * from ({select}) limit 0").description]
    if table_exists(conn, STAGING, table) and columns(conn, STAGING, table) != [*cols, "_run_id"]:
        conn.execute(f"drop table {stage_table}").fetchall()  # the contract or the hierarchy's columns changed
    conn.execute(f"create table if not exists {stage_table} as select *, ''::varchar as _run_id "
                 f"from ({select}) limit 0").fetchall()
    # the newest run of a batch wins: older staged rows of that batch (a killed run's) go, and
    # without their manifest entry such a run can never publish a partial batch
    conn.execute(f"delete from {stage_table} where {quote_ident(column)} in ({marks})", batches).fetchall()
    conn.execute(f"delete from {WRITES} where table_name = ? and batch in ({marks})", [table, *batches]).fetchall()
    conn.execute(f"insert into {stage_table} select *, ? from ({select})", [run_id]).fetchall()
    conn.executemany(f"insert into {WRITES} values (?, ?, ?)", [[run_id, b, table] for b in batches])


def staged_tables(conn, run_id: str, batch: str) -> set[str]:
    return {t for (t,) in conn.execute(f"select table_name from {WRITES} where run_id = ? and batch = ?",
                                       [run_id, batch]).fetchall()}


def has_staged(conn, run_id: str, table: str, batches: list[str]) -> bool:
    if not table_exists(conn, STAGING, "_writes"):
        return False
    marks = ", ".join("?" for _ in batches)
    return conn.execute(f"select count(*) from {WRITES} where run_id = ? and table_name = ? and batch in ({marks})",
                        [run_id, table, *batches]).fetchone()[0] > 0


def read_staged(conn, run_id: str, table: str, batches: list[str], column: str = "batch"):
    marks = ", ".join("?" for _ in batches)
    return conn.execute(f"select * exclude (_run_id) from {STAGING}.{quote_ident(table)} "
                        f"where _run_id = ? and {quote_ident(column)} in ({marks})", [run_id, *batches]).fetchdf()


def publish(conn, run_id: str, batch: str, column: str = "batch") -> list[str]:
    """Replace ``batch`` in every main table with what ``run_id`` staged, in the caller's transaction."""
    tables = sorted(staged_tables(conn, run_id, batch))
    for t in tables:
        main, stage_table = f"main.{quote_ident(t)}", f"{STAGING}.{quote_ident(t)}"
        have = set(columns(conn, "main", t))
        for c, typ in conn.execute("select column_name, data_type from duckdb_columns() where schema_name = ? "
                                   "and table_name = ? and column_name <> '_run_id' order by column_index",
                                   [STAGING, t]).fetchall():
            if c not in have:  # a new column (e.g. a hierarchy column added): older batches get NULL
                conn.execute(f"alter table {main} add column {quote_ident(c)} {typ}").fetchall()
        conn.execute(f"delete from {main} where {quote_ident(column)} = ?", [batch]).fetchall()
        conn.execute(f"insert into {main} by name select * exclude (_run_id) from {stage_table} "
                     f"where _run_id = ? and {quote_ident(column)} = ?", [run_id, batch]).fetchall()
        conn.execute(f"delete from {stage_table} where _run_id = ? and {quote_ident(column)} = ?", [run_id, batch]).fetchall()
    conn.execute(f"delete from {WRITES} where run_id = ? and batch = ?", [run_id, batch]).fetchall()
    return tables
