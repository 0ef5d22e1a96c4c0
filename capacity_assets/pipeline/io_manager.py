"""Where tables live: the dagster-duckdb IO manager, made safe for parallel batches.

Changes to the stock ``DuckDBPandasIOManager``, all about losing nothing:
- every connection holds the file's advisory lock (``store.db``) and runs in one transaction, so
  parallel batch runs queue for the file instead of failing on DuckDB's lock;
- a batch's tables are staged and published together (``store.staging``), so a run killed
  half-way leaves every table with the previous complete results of that batch;
- DATE columns are stored as DATE and an empty result still creates its (empty) table, so
  ``select * from skipped_series`` works before anything is skipped.

``build_io_manager`` is the one switch between storages (``CAPACITY_STORAGE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import dagster as dg
import pandas as pd
from dagster import InputContext, MetadataValue, OutputContext
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from capacity_assets.pipeline.batches import failures, mark
from capacity_assets.pipeline.dagster_private import (
    DbIOManager,
    DbTypeHandler,
    TableSlice,
    expected_tables,
    run_id_of,
)
from capacity_assets.schema import DATE_COLUMNS, quote_ident
from capacity_assets.store import postgres, staging
from capacity_assets.store.db import (
    DEFAULT_TIMEOUT_S,
    Database,
    index_batches,
    replace_table,
    schemas,
    table_exists,
    writing,
)

# asset metadata of an append table (forecast_history): publishing a batch replaces only the
# vintages it staged and keeps the newest `capacity/keep` of them (see store.staging)
APPEND_BY, KEEP = "capacity/append_by", "capacity/keep"


class StoreClient(DuckDbClient):
    """Dagster's table client over ``store.db.writing``: DuckDB under the file's lock, PostgreSQL
    holding the written batches' advisory locks; one transaction either way."""

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        if table_slice.schema not in schemas(connection):  # DDL only when needed (PostgreSQL)
            DuckDbClient.ensure_schema_exists(context, table_slice, connection)

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # partitioned tables are replaced when the batch is published; a failed statement would
        # abort the transaction, so check rather than catch
        if not table_slice.partition_dimensions and table_exists(
            connection, table_slice.schema, table_slice.table
        ):
            DuckDbClient.delete_table_slice(context, table_slice, connection)

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        db = Database(context.resource_config["database"], context.resource_config["lock_timeout"])
        written = (
            _batches(table_slice)[1]
            if isinstance(context, OutputContext) and (table_slice.partition_dimensions)
            else ()
        )
        with writing(db, written) as conn:
            yield conn


def _batches(table_slice: TableSlice) -> tuple[str, list[str]]:
    dim = table_slice.partition_dimensions[0]
    return dim.partition_expr, [str(p) for p in dim.partitions]


class StagedPandasTypeHandler(DuckDBPandasTypeHandler):
    """Stages partitioned outputs and publishes a batch once the run has staged every table it was
    asked for (``store.staging``); later steps of the same run read its staged rows."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ):
        name = f"{table_slice.schema}.{quote_ident(table_slice.table)}"
        listed = ", ".join(
            f"cast({quote_ident(c)} as date) as {quote_ident(c)}"
            if c in DATE_COLUMNS
            else quote_ident(c)
            for c in obj.columns
        )
        select = f"select {listed} from obj"
        failed = failures(obj)
        # an all-empty text column would be typed NULL and refuse the next batch's strings
        obj = obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})
        connection.execute(
            "select 1"
        ).fetchall()  # finish pending results (DuckDB >= 2 refuses register otherwise)
        connection.register("obj", obj)
        if (
            not table_slice.partition_dimensions
        ):  # replaced whole: its columns may change (hierarchy extras)
            replace_table(connection, name, select)
        else:
            if not table_exists(connection, table_slice.schema, table_slice.table):
                connection.execute(f"create table if not exists {name} as {select} limit 0")
                connection.fetchall()
                index_batches(
                    connection, table_slice.schema, table_slice.table, _batches(table_slice)[0]
                )
            self._stage(context, table_slice, select, connection, failed)
        connection.unregister("obj")
        meta = {
            "dagster/partition_row_count"
            if context.has_partition_key
            else "dagster/row_count": len(obj)
        }
        if table_slice.partition_dimensions and "batch" in obj.columns:
            # Dagster gives every batch of a ranged run the same metadata (the run's): say which is whose
            counts = obj["batch"].value_counts()
            meta["rows_by_batch"] = MetadataValue.json(
                {b: int(counts.get(b, 0)) for b in _batches(table_slice)[1]}
            )
        context.add_output_metadata(meta)

    @staticmethod
    def _stage(
        context: OutputContext, table_slice: TableSlice, select: str, conn, failed: dict[str, str]
    ) -> None:
        column, keys = _batches(table_slice)
        ok = [b for b in keys if b not in failed]
        if failed:  # never staged, so never published; the next steps learn why
            staging.record_failures(
                conn, context.run_id, table_slice.table, {b: failed[b] for b in keys if b in failed}
            )
        if not ok:
            return
        meta = context.definition_metadata or {}
        append_by, keep = meta.get(APPEND_BY), meta.get(KEEP)
        for b, previous in staging.stage(
            conn, table_slice.table, select, context.run_id, ok, column, append_by, keep
        ).items():
            context.log.warning(
                f"{b}: took the batch over from run {previous}, which was staging it too "
                f"(a concurrent or killed run); that run publishes nothing for {b}"
            )
        expected = expected_tables(context)
        for b in ok:
            if expected <= staging.staged_tables(conn, context.run_id, b):
                published = staging.publish(conn, context.run_id, b, column)
                context.log.info(f"{b}: published {len(published)} tables ({', '.join(published)})")

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection
    ) -> pd.DataFrame:
        if not table_exists(connection, table_slice.schema, table_slice.table):
            return pd.DataFrame()
        run_id = run_id_of(context)
        if (
            table_slice.partition_dimensions
            and run_id
            and table_slice.table in expected_tables(context)
        ):
            # this run writes the table: its own staged rows, and the batches it could not compute
            column, keys = _batches(table_slice)
            staged = staging.staged_batches(connection, run_id, table_slice.table, keys)
            frame = (
                staging.read_staged(connection, run_id, table_slice.table, sorted(staged), column)
                if staged
                else super().load_input(context, table_slice, connection).iloc[0:0]
            )
            missing = [b for b in keys if b not in staged]
            reasons = staging.failure_reasons(connection, run_id, missing) if missing else {}
            return mark(frame, {b: reasons.get(b, "not computed by this run") for b in missing})
        return super().load_input(context, table_slice, connection)


class CapacityDuckDBIOManager(DuckDBPandasIOManager):
    """DuckDB IO manager with per-file locking, atomic batch replacement and DATE columns."""

    lock_timeout: float = DEFAULT_TIMEOUT_S

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [StagedPandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=StoreClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=pd.DataFrame,
            io_manager_name="CapacityDuckDBIOManager",
        )


def build_io_manager(settings):
    """The IO manager of the store CAPACITY_DB names (a DuckDB file, or a PostgreSQL URL whose
    password is bound by name, so the UI never shows it)."""
    if settings.storage == "duckdb":
        database = dg.EnvVar("CAPACITY_DB") if postgres.has_password(settings.db) else settings.db
        return CapacityDuckDBIOManager(
            database=database, schema="main", lock_timeout=settings.lock_timeout
        )
    raise ValueError(f"CAPACITY_STORAGE={settings.storage!r} is not supported")
