"""Staged publication of a batch: every table of a batch is replaced together, or none is.

A run stages each partitioned output in the ``staging`` schema (rows tagged with its run id, and a
manifest row per batch and table). Once it has staged every table it was asked for, ``publish``
replaces that batch in all main tables in one transaction. Readers therefore see, per batch, either
the previous run's complete results or the new run's, across every table. Plain DuckDB SQL on the
caller's connection and transaction: no Dagster here.

Two runs of the same batch at once (a UI backfill and a scheduled run, say): the later one to stage
takes the batch over, last writer wins. The earlier run's staged rows go, and its next attempt to
stage or publish raises ``Superseded`` naming the run that took over, so it fails loudly instead
of reporting success for work it never published. Exactly one complete publication results.
"""

from __future__ import annotations

import json

from capacity_assets.schema import quote_ident
from capacity_assets.store import db
from capacity_assets.store.db import fetch_frame, table_exists

STAGING = "staging"
WRITES = f"{STAGING}._writes"  # manifest: which tables a run has staged for a batch
CLAIMS = f"{STAGING}._claims"  # batch -> the run staging it now
SUPERSEDED = f"{STAGING}._superseded"  # runs that another run took a batch over from
FAILURES = f"{STAGING}._failures"  # batches a run could not compute, and why (never published)


class Superseded(RuntimeError):
    """Another run started staging the same batch later and took it over."""


def _ensure(conn) -> None:
    # checked first: PostgreSQL serialises DDL (store.postgres), so writers must not all ask for it
    if table_exists(conn, STAGING, "_failures") and "columns" in columns(conn, STAGING, "_writes"):
        return
    conn.execute(f"create schema if not exists {STAGING}").fetchall()
    conn.execute(
        f"create table if not exists {WRITES} (run_id varchar, batch varchar, table_name varchar)"
    ).fetchall()
    # an append table (forecast_history) replaces only the staged values of ``append_by`` (its vintage)
    # in a batch and keeps the newest ``keep`` of them; an older database gets the columns here
    conn.execute(f"alter table {WRITES} add column if not exists append_by varchar").fetchall()
    conn.execute(f"alter table {WRITES} add column if not exists keep integer").fetchall()
    # the columns this run staged, in its order: the staging table may be wider (other runs' columns)
    conn.execute(f"alter table {WRITES} add column if not exists columns varchar").fetchall()
    conn.execute(f"create table if not exists {CLAIMS} (batch varchar, run_id varchar)").fetchall()
    conn.execute(
        f"create table if not exists {SUPERSEDED} (run_id varchar, batch varchar, by_run_id varchar, "
        f"superseded_at timestamp)"
    ).fetchall()
    conn.execute(
        f"create table if not exists {FAILURES} (run_id varchar, batch varchar, table_name varchar, "
        f"reason varchar)"
    ).fetchall()


def record_failures(conn, run_id: str, table: str, failed: dict[str, str]) -> None:
    """Remember why ``run_id`` has no ``table`` rows for these batches, for the steps after it."""
    _ensure(conn)
    conn.executemany(
        f"insert into {FAILURES} values (?, ?, ?, ?)",
        [[run_id, b, table, why] for b, why in failed.items()],
    )


def failure_reasons(conn, run_id: str, batches: list[str]) -> dict[str, str]:
    """Why ``run_id`` has no staged rows for these batches: a step failed, or another run took over."""
    if not table_exists(conn, STAGING, "_failures"):
        return {}
    marks = ", ".join("?" for _ in batches)
    reasons = dict(
        conn.execute(
            f"select batch, min(reason) from {FAILURES} where run_id = ? and batch in ({marks}) "
            f"group by batch",
            [run_id, *batches],
        ).fetchall()
    )
    for b, by in conn.execute(
        f"select batch, min(by_run_id) from {SUPERSEDED} where run_id = ? and batch in "
        f"({marks}) group by batch",
        [run_id, *batches],
    ).fetchall():
        reasons[b] = (
            f"run {run_id} was superseded by run {by}, which started the same batch later and "
            f"publishes it; this run published nothing for {b}"
        )
    return reasons


def _refuse_if_superseded(conn, run_id: str, batch: str) -> None:
    row = conn.execute(
        f"select by_run_id from {SUPERSEDED} where run_id = ? and batch = ?", [run_id, batch]
    ).fetchone()
    if row:
        raise Superseded(
            f"{batch}: run {run_id} was superseded by run {row[0]}, which started the same batch later "
            f"and publishes it; this run published nothing for {batch}"
        )


def claim(conn, run_id: str, batch: str) -> str | None:
    """Make ``run_id`` the run staging ``batch``; returns the run it took over from, if any."""
    _ensure(conn)
    _refuse_if_superseded(conn, run_id, batch)
    owner = conn.execute(f"select run_id from {CLAIMS} where batch = ?", [batch]).fetchone()
    if owner and owner[0] == run_id:
        return None
    if owner:
        conn.execute(
            f"insert into {SUPERSEDED} values (?, ?, ?, now())", [owner[0], batch, run_id]
        ).fetchall()
        conn.execute(f"delete from {CLAIMS} where batch = ?", [batch]).fetchall()
    conn.execute(f"insert into {CLAIMS} values (?, ?)", [batch, run_id]).fetchall()
    return owner[0] if owner else None


def columns(conn, schema: str, table: str) -> list[str]:
    return [c for c, _ in db.columns(conn, schema, table)]


def stage(
    conn,
    table: str,
    select: str,
    run_id: str,
    batches: list[str],
    column: str = "batch",
    append_by: str | None = None,
    keep: int | None = None,
) -> dict[str, str]:
    """Stage ``select``'s rows (registered as a relation by the caller) for ``batches`` of ``table``;
    returns {batch: run taken over} for batches another run was staging. With ``append_by``, publishing
    replaces only the staged values of that column in the batch and keeps its newest ``keep`` values."""
    stage_table = f"{STAGING}.{quote_ident(table)}"
    marks = ", ".join("?" for _ in batches)
    taken = {b: prev for b in batches if (prev := claim(conn, run_id, b))}
    if not table_exists(conn, STAGING, table):
        conn.execute(
            f"create table if not exists {stage_table} as select *, ''::varchar as _run_id "
            f"from ({select}) as _s limit 0"
        ).fetchall()
        db.index_batches(conn, STAGING, table, column)
    # the contract or the hierarchy's columns changed: widen the table, never drop what other runs staged
    have = set(columns(conn, STAGING, table))
    mine = db.describe(conn, select)
    for c, typ in mine:
        if c not in have:
            conn.execute(f"alter table {stage_table} add column {quote_ident(c)} {typ}").fetchall()
    # the newest run of a batch wins: every other run's staged rows of that batch go (a killed run's,
    # or one taken over), and without their manifest entries it can never publish a partial batch
    conn.execute(
        f"delete from {stage_table} where {quote_ident(column)} in ({marks}) and _run_id <> ?",
        [*batches, run_id],
    ).fetchall()
    conn.execute(
        f"delete from {WRITES} where batch in ({marks}) and run_id <> ?", [*batches, run_id]
    ).fetchall()
    conn.execute(
        f"delete from {stage_table} where {quote_ident(column)} in ({marks})", batches
    ).fetchall()
    conn.execute(
        f"delete from {WRITES} where table_name = ? and batch in ({marks})", [table, *batches]
    ).fetchall()
    names = ", ".join(quote_ident(c) for c, _ in mine)
    conn.execute(
        f"insert into {stage_table} ({names}, _run_id) select {names}, ?::varchar "
        f"from ({select}) as _s",
        [run_id],
    ).fetchall()
    listed = json.dumps([c for c, _ in mine])
    conn.executemany(
        f"insert into {WRITES} (run_id, batch, table_name, append_by, keep, columns) "
        f"values (?, ?, ?, ?, ?, ?)",
        [[run_id, b, table, append_by, keep, listed] for b in batches],
    )
    return taken


def staged_tables(conn, run_id: str, batch: str) -> set[str]:
    return {
        t
        for (t,) in conn.execute(
            f"select table_name from {WRITES} where run_id = ? and batch = ?", [run_id, batch]
        ).fetchall()
    }


def staged_batches(conn, run_id: str, table: str, batches: list[str]) -> set[str]:
    if not table_exists(conn, STAGING, "_writes"):
        return set()
    marks = ", ".join("?" for _ in batches)
    return {
        b
        for (b,) in conn.execute(
            f"select distinct batch from {WRITES} where run_id = ? and table_name = ? "
            f"and batch in ({marks})",
            [run_id, table, *batches],
        ).fetchall()
    }


def _my_columns(conn, run_id: str, table: str, batch: str) -> list[str] | None:
    """The columns ``run_id`` staged for ``table``, in its order (None: a manifest from before they were kept)."""
    row = conn.execute(
        f"select min(columns) from {WRITES} where run_id = ? and table_name = ? and batch = ?",
        [run_id, table, batch],
    ).fetchall()
    return json.loads(row[0][0]) if row and row[0][0] is not None else None


def _select_list(conn, table: str, mine: list[str] | None) -> str:
    names = (
        mine if mine is not None else [c for c in columns(conn, STAGING, table) if c != "_run_id"]
    )
    return ", ".join(quote_ident(c) for c in names)


def read_staged(conn, run_id: str, table: str, batches: list[str], column: str = "batch"):
    marks = ", ".join("?" for _ in batches)
    return fetch_frame(
        conn,
        f"select {_select_list(conn, table, _my_columns(conn, run_id, table, batches[0]))} "
        f"from {STAGING}.{quote_ident(table)} "
        f"where _run_id = ? and {quote_ident(column)} in ({marks})",
        [run_id, *batches],
    )


def publish(conn, run_id: str, batch: str, column: str = "batch") -> list[str]:
    """Replace ``batch`` in every main table with what ``run_id`` staged, in the caller's transaction.
    The manifest and both schemas' columns are read once for every table (a round trip each counts
    on PostgreSQL)."""
    _refuse_if_superseded(conn, run_id, batch)
    modes = {
        t: (a, k, json.loads(c) if c is not None else None)
        for t, a, k, c in conn.execute(
            f"select table_name, min(append_by), min(keep), min(columns) from {WRITES} "
            f"where run_id = ? and batch = ? group by 1",
            [run_id, batch],
        ).fetchall()
    }
    tables = sorted(modes)
    in_main = db.columns_by_table(conn, "main", tables)
    in_staging = db.columns_by_table(conn, STAGING, tables)
    key = quote_ident(column)
    for t in tables:
        main, stage_table = f"main.{quote_ident(t)}", f"{STAGING}.{quote_ident(t)}"
        append_by, keep, mine = modes[t]
        have = {c for c, _ in in_main.get(t, [])}
        staged = [(c, typ) for c, typ in in_staging.get(t, []) if c != "_run_id"]
        cols = ", ".join(
            quote_ident(c) for c in (mine if mine is not None else [c for c, _ in staged])
        )
        for c, typ in staged:
            if c not in have and (
                mine is None or c in mine
            ):  # a new column (e.g. a hierarchy column added): older batches get NULL
                conn.execute(f"alter table {main} add column {quote_ident(c)} {typ}").fetchall()
        if append_by:
            a = quote_ident(append_by)
            conn.execute(
                f"delete from {main} where {key} = ? and {a} in (select {a} from {stage_table} "
                f"where _run_id = ? and {key} = ?)",
                [batch, run_id, batch],
            ).fetchall()
        else:
            conn.execute(f"delete from {main} where {key} = ?", [batch]).fetchall()
        conn.execute(
            f"insert into {main} ({cols}) select {cols} from {stage_table} "
            f"where _run_id = ? and {key} = ?",
            [run_id, batch],
        ).fetchall()
        if append_by and keep:
            conn.execute(
                f"delete from {main} where {key} = ? and {a} not in (select distinct {a} "
                f"from {main} where {key} = ? order by {a} desc limit {int(keep)})",
                [batch, batch],
            ).fetchall()
        conn.execute(
            f"delete from {stage_table} where _run_id = ? and {key} = ?", [run_id, batch]
        ).fetchall()
    conn.execute(f"delete from {WRITES} where run_id = ? and batch = ?", [run_id, batch]).fetchall()
    conn.execute(f"delete from {CLAIMS} where batch = ? and run_id = ?", [batch, run_id]).fetchall()
    return tables
