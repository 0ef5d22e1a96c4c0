"""Where tables live: the dagster-duckdb IO manager, made safe for parallel batches.

Changes to the stock ``DuckDBPandasIOManager``, all about losing nothing:
- every connection holds the file's advisory lock (``dblock``) and runs in one transaction, so
  parallel batch runs queue for the file instead of failing on DuckDB's lock;
- a batch's tables are staged and published together (``StagedPandasTypeHandler``), so a run killed
  half-way leaves every table with the previous complete results of that batch;
- DATE columns are stored as DATE and an empty result still creates its (empty) table, so
  ``select * from skipped_series`` works before anything is skipped.

``build_io_manager`` is the one switch between storages (``CAPACITY_STORAGE``).
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from capacity_assets.dblock import DEFAULT_TIMEOUT_S, db_lock
from capacity_assets.schema import DATE_COLUMNS, quote_ident


class StorageError(RuntimeError):
    """The database file cannot be used; the message names it."""


def connect(db: str, read_only: bool = False, timeout: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open ``db`` with a message a user can act on when it is not a DuckDB file or another program
    (a DuckDB shell, a notebook: anything that skips ``<db>.lock``) holds it; such a holder is waited
    for up to CAPACITY_LOCK_TIMEOUT, as the lock file is. DuckDB refuses before writing a byte, so
    the file is never changed by a refusal."""
    if not read_only:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (DEFAULT_TIMEOUT_S if timeout is None else timeout)
    delay = 0.05
    while True:
        try:
            return duckdb.connect(db, read_only=read_only)
        except duckdb.IOException as e:
            text = str(e)
            first = text.splitlines()[0]
            if "not a valid DuckDB database" in text or "magic" in text.lower():
                raise StorageError(f"{db} is not a DuckDB database file ({first}); "
                                   f"point CAPACITY_DB at a new or existing .duckdb file") from None
            if "Could not set lock" in text or "Conflicting lock" in text:
                if time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                holder = re.search(r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?\.? See also", text)
                who = f" (PID {holder.group(2)}, {holder.group(1)})" if holder and holder.group(2) else ""
                raise StorageError(f"{db} is locked by another program{who} that opened it directly, not "
                                   f"through capacity; close that program (a DuckDB shell or notebook?) "
                                   f"and re-run") from None
            raise StorageError(f"cannot open {db}: {first}") from None


def table_exists(conn, schema: str, table: str) -> bool:
    return conn.execute("select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
                        [schema, table]).fetchone()[0] > 0


STAGING = "staging"
WRITES = f"{STAGING}._writes"  # manifest: which tables a run has staged for a batch



class LockedDuckDbClient(DuckDbClient):
    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # partitioned tables are replaced when the batch is published; a failed statement would
        # abort the transaction, so check rather than catch
        if not table_slice.partition_dimensions and table_exists(connection, table_slice.schema, table_slice.table):
            DuckDbClient.delete_table_slice(context, table_slice, connection)

    @staticmethod
    @contextmanager
    def connect(context, _):
        db = context.resource_config["database"]
        with db_lock(db):
            conn = connect(db)
            try:
                conn.execute("begin transaction").fetchall()
                yield conn
                conn.execute("commit")
            except BaseException:
                try:
                    conn.execute("rollback")
                except duckdb.Error:
                    pass
                raise
            finally:
                conn.close()


def _run_id(context) -> str | None:
    try:
        return context.step_context.run_id
    except Exception:  # noqa: BLE001 - an input loaded outside a run (tests, notebooks)
        return None


def _expected_tables(context: OutputContext) -> set[str]:
    """The partitioned tables this run will write for a batch: publish once all are staged."""
    step = context.step_context
    graph = step.job_def.asset_layer.asset_graph
    keys = step.dagster_run.asset_selection or step.job_def.asset_layer.selected_asset_keys
    return {k.path[-1] for k in keys if graph.has(k) and graph.get(k).is_partitioned}


def _batches(table_slice: TableSlice) -> tuple[str, list[str]]:
    dim = table_slice.partition_dimensions[0]
    return dim.partition_expr, [str(p) for p in dim.partitions]


def _columns(conn, schema: str, table: str) -> list[str]:
    return [c for (c,) in conn.execute("select column_name from duckdb_columns() where schema_name = ? and "
                                       "table_name = ? order by column_index", [schema, table]).fetchall()]


def publish(conn, run_id: str, batch: str, column: str = "batch") -> list[str]:
    """Replace ``batch`` in every main table with what ``run_id`` staged, in the caller's transaction."""
    tables = [t for (t,) in conn.execute(f"select distinct table_name from {WRITES} where run_id = ? and batch = ?",
                                         [run_id, batch]).fetchall()]
    for t in tables:
        main, stage = f"main.{quote_ident(t)}", f"{STAGING}.{quote_ident(t)}"
        have = set(_columns(conn, "main", t))
        for c, typ in conn.execute("select column_name, data_type from duckdb_columns() where schema_name = ? "
                                   "and table_name = ? and column_name <> '_run_id' order by column_index",
                                   [STAGING, t]).fetchall():
            if c not in have:  # a new column (e.g. a hierarchy column added): older batches get NULL
                conn.execute(f"alter table {main} add column {quote_ident(c)} {typ}").fetchall()
        conn.execute(f"delete from {main} where {quote_ident(column)} = ?", [batch]).fetchall()
        conn.execute(f"insert into {main} by name select * exclude (_run_id) from {stage} "
                     f"where _run_id = ? and {quote_ident(column)} = ?", [run_id, batch]).fetchall()
        conn.execute(f"delete from {stage} where _run_id = ? and {quote_ident(column)} = ?", [run_id, batch]).fetchall()
    conn.execute(f"delete from {WRITES} where run_id = ? and batch = ?", [run_id, batch]).fetchall()
    return tables


class StagedPandasTypeHandler(DuckDBPandasTypeHandler):
    """Writes a batch's tables to a staging schema and publishes them together.

    A run stages each partitioned output (``staging.<table>``, tagged with its run id) and, once it
    has staged every table it was asked for, replaces that batch in all main tables in one
    transaction. Readers therefore see, per batch, either the previous run's complete results or the
    new run's, across every table: a run killed or failed half-way publishes nothing. Later steps of
    the same run read its staged rows.
    """

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        name = f"{table_slice.schema}.{quote_ident(table_slice.table)}"
        casts = ", ".join(f"cast({quote_ident(c)} as date) as {quote_ident(c)}" for c in obj.columns if c in DATE_COLUMNS)
        select = f"select * replace ({casts}) from obj" if casts else "select * from obj"
        # an all-empty text column would be typed NULL and refuse the next batch's strings
        obj = obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})
        connection.execute("select 1").fetchall()  # finish pending results (DuckDB >= 2 refuses register otherwise)
        connection.register("obj", obj)
        if not table_slice.partition_dimensions:  # replaced whole: its columns may change (hierarchy extras)
            connection.execute(f"create or replace table {name} as {select}").fetchall()
        else:
            connection.execute(f"create table if not exists {name} as {select} limit 0").fetchall()
            self._stage(context, table_slice, select, connection)
        connection.unregister("obj")
        context.add_output_metadata({"dagster/partition_row_count" if context.has_partition_key
                                     else "dagster/row_count": len(obj)})

    @staticmethod
    def _stage(context: OutputContext, table_slice: TableSlice, select: str, conn) -> None:
        run_id, table = context.run_id, table_slice.table
        column, batches = _batches(table_slice)
        stage = f"{STAGING}.{quote_ident(table)}"
        marks = ", ".join("?" for _ in batches)
        conn.execute(f"create schema if not exists {STAGING}").fetchall()
        conn.execute(f"create table if not exists {WRITES} (run_id varchar, batch varchar, table_name varchar)").fetchall()
        columns = [d[0] for d in conn.execute(f"select * from ({select}) limit 0").description]
        if table_exists(conn, STAGING, table) and _columns(conn, STAGING, table) != [*columns, "_run_id"]:
            conn.execute(f"drop table {stage}").fetchall()  # the contract or the hierarchy's columns changed
        conn.execute(f"create table if not exists {stage} as select *, ''::varchar as _run_id from ({select}) limit 0").fetchall()
        # the newest run of a batch wins: older staged rows of that batch (a killed run's) go, and
        # without their manifest entry such a run can never publish a partial batch
        conn.execute(f"delete from {stage} where {quote_ident(column)} in ({marks})", batches).fetchall()
        conn.execute(f"delete from {WRITES} where table_name = ? and batch in ({marks})", [table, *batches]).fetchall()
        conn.execute(f"insert into {stage} select *, ? from ({select})", [run_id]).fetchall()
        conn.executemany(f"insert into {WRITES} values (?, ?, ?)", [[run_id, b, table] for b in batches])
        expected = _expected_tables(context)
        for b in batches:
            staged = {t for (t,) in conn.execute(f"select table_name from {WRITES} where run_id = ? and batch = ?",
                                                 [run_id, b]).fetchall()}
            if expected <= staged:
                published = publish(conn, run_id, b, column)
                context.log.info(f"{b}: published {len(published)} tables ({', '.join(sorted(published))})")

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        if not table_exists(connection, table_slice.schema, table_slice.table):
            return pd.DataFrame()
        run_id = _run_id(context)
        if table_slice.partition_dimensions and run_id and table_exists(connection, STAGING, "_writes"):
            column, batches = _batches(table_slice)
            marks = ", ".join("?" for _ in batches)
            staged = connection.execute(f"select count(*) from {WRITES} where run_id = ? and table_name = ? "
                                        f"and batch in ({marks})", [run_id, table_slice.table, *batches]).fetchone()[0]
            if staged:  # this run's own, not yet published, output
                return connection.execute(
                    f"select * exclude (_run_id) from {STAGING}.{quote_ident(table_slice.table)} "
                    f"where _run_id = ? and {quote_ident(column)} in ({marks})", [run_id, *batches]).fetchdf()
        return super().load_input(context, table_slice, connection)


class CapacityDuckDBIOManager(DuckDBPandasIOManager):
    """DuckDB IO manager with per-file locking, atomic batch replacement and DATE columns."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [StagedPandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=LockedDuckDbClient(), database=self.database, schema=self.schema_,
            type_handlers=self.type_handlers(), default_load_type=pd.DataFrame,
            io_manager_name="CapacityDuckDBIOManager",
        )


def drop_other_batches(db: str, keys: list[str]) -> list[str]:
    """Delete rows of batches that are not in ``keys`` (left by an earlier CAPACITY_BATCHES), in one
    transaction across every partitioned table; returns the batches removed."""
    with db_lock(db):
        conn = connect(db)
        try:
            tables = [t for (t,) in conn.execute(
                "select distinct table_name from duckdb_columns() where schema_name = 'main' "
                "and column_name = 'batch'").fetchall()]
            stale = sorted({b for t in tables for (b,) in conn.execute(
                f"select distinct batch from main.{quote_ident(t)}").fetchall()} - set(keys))
            if stale:
                marks = ", ".join("?" for _ in stale)
                conn.execute("begin transaction").fetchall()
                for t in tables:
                    conn.execute(f"delete from main.{quote_ident(t)} where batch in ({marks})", stale).fetchall()
                conn.execute("commit").fetchall()
            return stale
        finally:
            conn.close()


def build_io_manager(settings):
    """The IO manager for ``settings.storage``; the only place that knows the storage."""
    if settings.storage == "duckdb":
        return CapacityDuckDBIOManager(database=settings.db, schema="main")
    raise ValueError(f"CAPACITY_STORAGE={settings.storage!r} is not supported")
