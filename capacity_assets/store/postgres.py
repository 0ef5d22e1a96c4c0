"""A PostgreSQL database behind the DuckDB connection's interface, so the store's code is one.

The store speaks the few methods of a DuckDB connection it uses (``execute`` with ``?`` marks,
``fetchall``/``fetchone``/``fetchdf``, ``sql(...).to_arrow_table()``, ``register`` of a DataFrame);
this class gives PostgreSQL the same surface through ADBC's PostgreSQL driver, which moves rows as
Arrow in both directions (binary COPY; chosen by ``benchmarks/pg_transfer.py``). What SQL differs
between the two lives here: marks become ``$n``, DuckDB's aggregates the readers use are created
as functions once (``prepare``), and DDL waits for one advisory lock, because concurrent
``CREATE TABLE IF NOT EXISTS`` fails in PostgreSQL.

A writer is one transaction (``begin`` .. ``commit``); a reader is one ``REPEATABLE READ READ
ONLY`` transaction: one consistent snapshot, and it never waits for a writer. The password, from
the URL or ``PGPASSWORD`` (libpq reads it), is never part of a message: ``redact``.
"""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa

SCHEMES = ("postgresql://", "postgres://")
DDL_LOCK = 7_411_952_001  # advisory lock key: one DDL statement at a time across every process
BATCH_LOCK = "capacity_assets:batch:"  # + batch: the advisory lock of a batch's staging and publish
_DDL = re.compile(r"^\s*(create|alter|drop\s+table|drop\s+view)\b", re.I)
_ROWS = re.compile(r"^\s*(delete|update|insert)\b(?!.*\breturning\b)", re.I | re.S)
_CREDENTIALS = re.compile(r"(//[^/@:]*:)[^/@]*@")

# DuckDB's aggregates and functions the readers' SQL uses, as PostgreSQL functions (created once)
FUNCTIONS = [
    """create or replace function main._median_final(double precision[]) returns double precision
       language sql immutable as $$
       select percentile_cont(0.5) within group (order by v) from unnest($1) v where v is not null $$""",
    """do $$ begin
         create aggregate main.median(double precision) (sfunc = array_append,
           stype = double precision[], finalfunc = main._median_final, initcond = '{}');
       exception when duplicate_function then null; end $$""",
    """create or replace function main._first(anyelement, anyelement) returns anyelement
       language sql immutable as $$ select coalesce($1, $2) $$""",
    """do $$ begin
         create aggregate main.any_value(anyelement) (sfunc = main._first, stype = anyelement);
       exception when duplicate_function then null; end $$""",
    """create or replace function main.isnan(double precision) returns boolean
       language sql immutable as $$ select $1 = 'NaN'::double precision $$""",
]


def is_postgres(db) -> bool:
    return str(getattr(db, "url", db)).strip().lower().startswith(SCHEMES)


def has_password(url: str) -> bool:
    return bool(_CREDENTIALS.search(str(url)))


def redact(text: str) -> str:
    """``text`` with any password in a URL replaced by ***."""
    return _CREDENTIALS.sub(r"\1***@", str(text))


def _marks(sql: str) -> str:
    """DuckDB's ``?`` parameter marks as PostgreSQL's ``$1, $2 ...``, outside quotes."""
    out, n, quote = [], 0, None
    for ch in sql:
        if quote:
            quote = None if ch == quote else quote
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def _plain(value):
    """A parameter as the driver binds it (numpy scalars and pandas timestamps are not)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


class StorageError(RuntimeError):
    """The store cannot be used (a file that is not DuckDB, a server that refuses); the message
    names it, without a password."""


def _plain_call(func, args, kwargs, cancel):
    return func(*args, **kwargs)


def _keep_python_sigint() -> None:
    """ADBC runs each driver call under a native SIGINT handler that cancels the statement instead
    of raising: Ctrl-C then fails a step as an ordinary error, or is lost when the call was short,
    and a run goes on. Plain calls (what ADBC does on Windows) let Python's handler, and Dagster's
    interrupt, see it as soon as the call returns."""
    import adbc_driver_manager.dbapi as dbapi

    dbapi._blocking_call = _plain_call


class PgConnection:
    """One PostgreSQL session, autocommit unless the caller says ``begin``."""

    def __init__(self, url: str):
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError:  # an optional extra: DuckDB, the default, needs none of it
            raise StorageError(
                "CAPACITY_DB is a PostgreSQL URL, and the PostgreSQL driver is not installed: "
                "pip install 'capacity_assets[postgres]'"
            ) from None
        _keep_python_sigint()
        self.url = str(getattr(url, "url", url))
        try:
            self._conn = adbc.connect(self.url, autocommit=True)
        except Exception as e:  # noqa: BLE001 - the driver's text may carry the URL
            raise StorageError(
                f"cannot connect to {redact(self.url)}: {redact(_first_line(e))}"
            ) from None
        self._cur = self._conn.cursor()
        self._rows: pa.Table | None = None
        self._count = -1
        self._in_transaction = self._ddl_locked = False
        self._temp: set[str] = set()
        self._cur.execute("set search_path = main, public")

    # --- DuckDB's connection surface -----------------------------------------------------------
    def execute(self, sql: str, params=None) -> PgConnection:
        word = sql.strip().split(None, 1)[0].lower() if sql.strip() else ""
        if word in ("begin", "start"):
            self._in_transaction, self._ddl_locked = True, False
        elif word in ("commit", "rollback", "end", "abort"):
            self._in_transaction = self._ddl_locked = False
        elif _DDL.match(sql) and self._in_transaction and not self._ddl_locked:
            self._cur.execute("select pg_advisory_xact_lock($1)", [DDL_LOCK])
            self._cur.fetchall()
            self._ddl_locked = True
        try:
            self._cur.execute(_marks(sql), [_plain(p) for p in params] if params else None)
        except Exception as e:  # noqa: BLE001
            raise _error(e, sql) from None
        self._count = self._cur.rowcount
        try:
            self._rows = self._cur.fetch_arrow_table()
        except Exception:  # noqa: BLE001 - a statement without a result set
            self._rows = None
        if self._rows is not None and self._rows.num_columns == 0:
            self._rows = None
        if self._rows is None and _ROWS.match(sql):
            self._rows = pa.table({"count": [max(self._count, 0)]})
        return self

    sql = execute

    def executemany(self, sql: str, rows) -> None:
        for row in rows:
            self.execute(sql, row)

    def to_arrow_table(self) -> pa.Table:
        return self._rows if self._rows is not None else pa.table({})

    def fetchall(self) -> list[tuple]:
        if self._rows is None:
            return []
        cols = [c.to_pylist() for c in self._rows.columns]
        return list(zip(*cols)) if cols else []

    def fetchone(self):
        rows = self.fetchall()
        return rows[0] if rows else None

    def fetchdf(self) -> pd.DataFrame:
        from capacity_assets.store.db import arrow_frame

        return arrow_frame(self.to_arrow_table())

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """``frame`` as a temporary table ``name`` (dropped at ``unregister`` or disconnect)."""
        self.unregister(name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.cast(pa.schema([_storable(f) for f in table.schema]))
        try:
            self._cur.adbc_ingest(name, table, mode="create", temporary=True)
        except Exception as e:  # noqa: BLE001
            raise _error(e, f"register {name}") from None
        self._temp.add(name)

    def unregister(self, name: str) -> None:
        if name in self._temp:
            self._cur.execute(f"drop table if exists pg_temp.{_ident(name)}")
            self._temp.discard(name)

    def close(self) -> None:
        try:
            self._cur.close()
            self._conn.close()
        except Exception:  # noqa: BLE001 - a server that went away: nothing left to close
            pass

    # --- what the store asks of either database ---------------------------------------------
    def table_exists(self, schema: str, table: str) -> bool:
        return bool(
            self.execute(
                "select count(*) from information_schema.tables where table_schema = ? "
                "and table_name = ?",
                [schema, table],
            ).fetchone()[0]
        )

    def columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        """(name, SQL type) of ``schema.table`` in column order."""
        return self.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = ? and c.relname = ? and a.attnum > 0 and not a.attisdropped "
            "order by a.attnum",
            [schema, table],
        ).fetchall()

    def describe(self, select: str) -> list[tuple[str, str]]:
        """(name, SQL type) of the columns ``select`` returns."""
        self.execute(f"create temporary view _describe as {select}")
        try:
            return self.columns(self._temp_schema(), "_describe")
        finally:
            self.execute("drop view if exists pg_temp._describe")

    def _temp_schema(self) -> str:
        return self.execute(
            "select nspname from pg_namespace where oid = pg_my_temp_schema()"
        ).fetchone()[0]

    def index_column(self, schema: str, table: str, column: str) -> None:
        """An index on ``column`` (the batch key): without it every publish's ``delete ... where
        batch = ?`` reads the whole table, and publishing slows as the fleet grows."""
        name = _ident(f"{table}__{column}"[:63])
        self.execute(
            f"create index if not exists {name} on {_ident(schema)}.{_ident(table)} ({_ident(column)})"
        )

    def unindexed(self, column: str) -> list[tuple[str, str]]:
        """(schema, table) of the store's tables with ``column`` and no index that starts with it
        (a database written before the store indexed it)."""
        return self.execute(
            "select n.nspname, c.relname from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "join pg_attribute a on a.attrelid = c.oid and a.attname = ? and not a.attisdropped "
            "where n.nspname in ('main', 'staging') and c.relkind = 'r' and not exists ("
            "select 1 from pg_index i where i.indrelid = c.oid and i.indkey[0] = a.attnum) "
            "order by 1, 2",
            [column],
        ).fetchall()

    def lock_batches(self, batches) -> None:
        """Hold each batch's advisory lock until the transaction ends, in one order (no deadlock)."""
        for b in sorted(set(map(str, batches))):
            self.execute("select pg_advisory_xact_lock(hashtextextended(?, 0))", [BATCH_LOCK + b])


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _storable(field: pa.Field) -> pa.Field:
    """Arrow types PostgreSQL stores as DuckDB does: large and dictionary strings as text."""
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_large_string(t):
        t = pa.string()
    if pa.types.is_timestamp(t) and t.tz is not None:
        t = pa.timestamp("us", tz="UTC")
    elif pa.types.is_timestamp(t):
        t = pa.timestamp("us")
    return pa.field(field.name, t)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _error(e: Exception, sql: str) -> Exception:
    return StorageError(
        f"PostgreSQL refused {sql.strip().split(None, 3)[:3]}...: {redact(_first_line(e))}"
    )


def prepare(conn: PgConnection) -> None:
    """The schemas and DuckDB's functions the readers use, once per database (before any batch runs)."""
    conn.execute("begin")
    conn.execute("create schema if not exists main")
    conn.execute("create schema if not exists staging")
    for ddl in FUNCTIONS:
        conn.execute(ddl)
    for schema, table in conn.unindexed("batch"):
        conn.index_column(schema, table, "batch")
    conn.execute("commit")
