"""Where tables live: the dagster-duckdb IO manager, made safe for parallel batches.

Two changes to the stock ``DuckDBPandasIOManager``, both about losing nothing:
- every connection holds the file's advisory lock (``dblock``) and runs in one transaction, so a
  batch's delete-then-insert commits whole or not at all (a killed run leaves the previous rows), and
  parallel batch runs queue for the file instead of failing on DuckDB's lock;
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
from capacity_assets.schema import DATE_COLUMNS


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


class LockedDuckDbClient(DuckDbClient):
    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # a failed statement would abort the transaction, so check rather than catch
        if table_exists(connection, table_slice.schema, table_slice.table):
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


class DatedPandasTypeHandler(DuckDBPandasTypeHandler):
    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        name = f"{table_slice.schema}.{table_slice.table}"
        casts = ", ".join(f'cast("{c}" as date) as "{c}"' for c in obj.columns if c in DATE_COLUMNS)
        select = f"select * replace ({casts}) from obj" if casts else "select * from obj"
        # an all-empty text column would be typed NULL and refuse the next batch's strings
        obj = obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})
        connection.execute("select 1").fetchall()  # finish pending results (DuckDB >= 2 refuses register otherwise)
        connection.register("obj", obj)
        connection.execute(f"create table if not exists {name} as {select} limit 0").fetchall()
        if not obj.empty:
            connection.execute(f"insert into {name} {select}").fetchall()
        connection.unregister("obj")
        context.add_output_metadata({"dagster/partition_row_count" if context.has_partition_key
                                     else "dagster/row_count": len(obj)})

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        if not table_exists(connection, table_slice.schema, table_slice.table):
            return pd.DataFrame()
        return super().load_input(context, table_slice, connection)


class CapacityDuckDBIOManager(DuckDBPandasIOManager):
    """DuckDB IO manager with per-file locking, atomic batch replacement and DATE columns."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DatedPandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=LockedDuckDbClient(), database=self.database, schema=self.schema_,
            type_handlers=self.type_handlers(), default_load_type=pd.DataFrame,
            io_manager_name="CapacityDuckDBIOManager",
        )


def build_io_manager(settings):
    """The IO manager for ``settings.storage``; the only place that knows the storage."""
    if settings.storage == "duckdb":
        return CapacityDuckDBIOManager(database=settings.db, schema="main")
    raise ValueError(f"CAPACITY_STORAGE={settings.storage!r} is not supported")
