"""Opening the store: a DuckDB file (the embedded default) or a PostgreSQL database (a URL).

Every module reads and writes the store through ``reading`` and ``writing`` here; what differs
between the two databases lives in ``store.postgres``.

DuckDB: one advisory lock per file, shared by every process that touches it.

DuckDB lets one process hold a file read-write, and refuses read-only opens meanwhile. Instead of
racing on DuckDB's own lock (and failing after a few retries in a large backfill), writers take an
exclusive ``flock`` on ``<db>.lock`` and readers (the dashboard) a shared one, each for the few
seconds a read or a write lasts; model fitting never holds it. Waiting is bounded and the timeout
message says which file and what to do.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from capacity_assets.schema import quote_ident
from capacity_assets.store import postgres

DEFAULT_TIMEOUT_S = 600.0
NOTICE_AFTER_S = 10.0
log = logging.getLogger(__name__)


class Database(str):
    """CAPACITY_DB with how long to wait for it (CAPACITY_LOCK_TIMEOUT, read by ``config``): a
    ``str``, so every message and caller that wants the plain path keeps working, while the store's
    functions need nothing threaded through them. A PostgreSQL URL reads as itself without its
    password, so no message can show it; ``url`` holds the whole."""

    lock_timeout: float
    url: str

    def __new__(cls, path: str | os.PathLike, lock_timeout: float = DEFAULT_TIMEOUT_S):
        url = getattr(path, "url", None) or os.fspath(path)
        self = super().__new__(cls, postgres.redact(url) if postgres.is_postgres(url) else url)
        self.lock_timeout, self.url = lock_timeout, url
        return self

    def __reduce__(self):
        return (Database, (self.url, self.lock_timeout))


def is_postgres(db) -> bool:
    return postgres.is_postgres(db)


def exists(db) -> bool:
    """Whether there is a store to read yet (a PostgreSQL database is always there)."""
    return is_postgres(db) or os.path.exists(db)


def lock_timeout(db) -> float:
    """Seconds to wait for ``db``: its own (a ``Database``) or the default."""
    return getattr(db, "lock_timeout", DEFAULT_TIMEOUT_S)


class DatabaseBusy(RuntimeError):
    """Another process held the database for longer than we were willing to wait."""


def lock_path(db: str | os.PathLike) -> Path:
    return Path(str(db) + ".lock")


@contextmanager
def db_lock(db: str | os.PathLike, exclusive: bool = True, timeout: float | None = None):
    if is_postgres(db):  # PostgreSQL: transactions, and each batch's advisory lock in writers
        yield
        return
    path = lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = lock_timeout(db) if timeout is None else timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    started = time.monotonic()
    deadline = started + timeout
    delay, told = 0.01, False
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and time.monotonic() - started > NOTICE_AFTER_S:
                    log.warning(
                        f"waiting for {db}: another process is using it (lock file {path}); "
                        f"giving up after {timeout:.0f} s"
                    )
                    told = True
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(
                        f"{db} is busy: another process has held it for over {timeout:.0f} s "
                        f"(lock file {path}); wait for it to finish or stop it"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def reading(db: str, timeout: float | None = None):
    """A read-only connection to ``db``, closed on exit. DuckDB: under the file's shared lock, so a
    writing run waits for at most this one read. PostgreSQL: one REPEATABLE READ READ ONLY
    transaction, one consistent snapshot that never waits for a writer."""
    if is_postgres(db):
        conn = connect(db)
        try:
            conn.execute("begin isolation level repeatable read read only")
            yield conn
        finally:
            conn.close()  # a read-only transaction: closing ends it
        return
    with db_lock(db, exclusive=False, timeout=timeout):
        conn = connect(db, read_only=True)
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def exclusive(db: str, name: str):
    """One process at a time in the block, per store and ``name`` (two notify runs at once):
    DuckDB a lock file ``<db>.<name>.lock``, PostgreSQL a session advisory lock."""
    if not is_postgres(db):
        with db_lock(f"{db}.{name}", timeout=lock_timeout(db)):
            yield
        return
    conn = connect(db)
    try:
        conn.execute("select pg_advisory_lock(hashtextextended(?, 0))", [f"capacity_assets:{name}"])
        yield
    finally:
        conn.close()  # ends the session, and its lock with it


_PREPARED: set[str] = set()  # PostgreSQL databases this process has seen prepared


def prepare(db) -> None:
    """What the store needs before any batch runs, created once: PostgreSQL's schemas and the
    functions its readers use (concurrent DDL fails there). A DuckDB file is opened once, so one
    that is not DuckDB is refused before anything runs (DuckDB refuses without writing a byte)."""
    if not is_postgres(db):
        with db_lock(db):
            connect(db).close()
        return
    if getattr(db, "url", db) in _PREPARED:
        return
    conn = connect(db)
    try:
        if (
            not {"main", "staging"} <= schemas(conn)
            or conn.unindexed("batch")
            or not conn.execute(
                "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
                "where n.nspname = 'main' and p.proname = 'median'"
            ).fetchone()[0]
        ):
            postgres.prepare(conn)
    finally:
        conn.close()
    _PREPARED.add(getattr(db, "url", db))


@contextmanager
def writing(db: str, batches=()):
    """A connection to ``db`` in one transaction, committed when the block ends and rolled back if
    it raises. DuckDB: under the file's exclusive lock. PostgreSQL: holding ``batches``' advisory
    locks, so runs of other batches go on meanwhile."""
    if is_postgres(db):
        prepare(db)
    with db_lock(db):
        conn = connect(db)
        try:
            conn.execute("begin transaction").fetchall()
            if is_postgres(db):
                conn.lock_batches(batches)
            yield conn
            conn.execute("commit").fetchall()
        except BaseException:
            try:
                conn.execute("rollback")
            except Exception:  # noqa: BLE001 - the connection itself is gone: nothing to undo
                pass
            raise
        finally:
            conn.close()


StorageError = postgres.StorageError  # one class for both databases: callers catch one


def connect(db: str, read_only: bool = False, timeout: float | None = None):
    """Open ``db`` with a message a user can act on when it is not a DuckDB file or another program
    (a DuckDB shell, a notebook: anything that skips ``<db>.lock``) holds it; such a holder is waited
    for up to CAPACITY_LOCK_TIMEOUT, as the lock file is. DuckDB refuses before writing a byte, so
    the file is never changed by a refusal."""
    if is_postgres(db):
        return postgres.PgConnection(getattr(db, "url", db))
    if not read_only:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (lock_timeout(db) if timeout is None else timeout)
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as e:
            text = str(e)
            first = text.splitlines()[0]
            if "not a valid DuckDB database" in text or "magic" in text.lower():
                raise StorageError(
                    f"{db} is not a DuckDB database file ({first}); "
                    f"point CAPACITY_DB at a new or existing .duckdb file"
                ) from None
            if "Could not set lock" in text or "Conflicting lock" in text:
                if time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                holder = re.search(
                    r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?\.? See also", text
                )
                who = (
                    f" (PID {holder.group(2)}, {holder.group(1)})"
                    if holder and holder.group(2)
                    else ""
                )
                raise StorageError(
                    f"{db} is locked by another program{who} that opened it directly, not "
                    f"through capacity; close that program (a DuckDB shell or notebook?) "
                    f"and re-run"
                ) from None
            raise StorageError(f"cannot open {db}: {first}") from None


def table_exists(conn, schema: str, table: str) -> bool:
    if isinstance(conn, postgres.PgConnection):
        return conn.table_exists(schema, table)
    return (
        conn.execute(
            "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
        > 0
    )


def columns(conn, schema: str, table: str) -> list[tuple[str, str]]:
    """(name, SQL type) of ``schema.table`` in column order."""
    if isinstance(conn, postgres.PgConnection):
        return conn.columns(schema, table)
    return conn.execute(
        "select column_name, data_type from duckdb_columns() where schema_name = ? "
        "and table_name = ? order by column_index",
        [schema, table],
    ).fetchall()


def columns_by_table(conn, schema: str, tables: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(name, SQL type) of each of ``tables`` in ``schema``, in column order, in one query."""
    if not tables:
        return {}
    marks = ", ".join("?" for _ in tables)
    if isinstance(conn, postgres.PgConnection):
        sql = (
            "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
            f"where n.nspname = ? and c.relname in ({marks}) and a.attnum > 0 "
            "and not a.attisdropped order by c.relname, a.attnum"
        )
    else:
        sql = (
            "select table_name, column_name, data_type from duckdb_columns() where schema_name = ? "
            f"and table_name in ({marks}) order by table_name, column_index"
        )
    found: dict[str, list[tuple[str, str]]] = {}
    for t, c, typ in conn.execute(sql, [schema, *tables]).fetchall():
        found.setdefault(t, []).append((c, typ))
    return found


def index_batches(conn, schema: str, table: str, column: str = "batch") -> None:
    """PostgreSQL: an index on a new table's batch key, so a batch's publish reads its own rows
    only. DuckDB needs none: its zone maps skip other batches' row groups, and an index there
    would slow every insert and delete."""
    if isinstance(conn, postgres.PgConnection):
        conn.index_column(schema, table, column)


def describe(conn, select: str) -> list[tuple[str, str]]:
    """(name, SQL type) of the columns ``select`` returns."""
    if isinstance(conn, postgres.PgConnection):
        return conn.describe(select)
    return conn.execute(f"select column_name, column_type from (describe ({select}))").fetchall()


def tables_with(conn, schema: str, column: str) -> list[str]:
    """The tables of ``schema`` that have ``column``."""
    if isinstance(conn, postgres.PgConnection):
        sql = (
            "select distinct table_name from information_schema.columns where table_schema = ? "
            "and column_name = ? order by 1"
        )
    else:
        sql = (
            "select distinct table_name from duckdb_columns() where schema_name = ? "
            "and column_name = ? order by 1"
        )
    return [t for (t,) in conn.execute(sql, [schema, column]).fetchall()]


def table_names(conn, schema: str = "main") -> set[str]:
    if isinstance(conn, postgres.PgConnection):
        sql = "select table_name from information_schema.tables where table_schema = ?"
    else:
        sql = "select table_name from duckdb_tables() where schema_name = ?"
    return {t for (t,) in conn.execute(sql, [schema]).fetchall()}


def schemas(conn) -> set[str]:
    return {
        n for (n,) in conn.execute("select schema_name from information_schema.schemata").fetchall()
    }


def replace_table(conn, name: str, select: str) -> None:
    """``name`` made anew from ``select`` (its columns may change: the hierarchy's extras)."""
    if isinstance(conn, postgres.PgConnection):
        conn.execute(f"drop table if exists {name}")
        conn.execute(f"create table {name} as {select}")
    else:
        conn.execute(f"create or replace table {name} as {select}").fetchall()


def drop_other_batches(db: str, keys: list[str]) -> list[str]:
    """Delete rows of batches that are not in ``keys`` (left by an earlier CAPACITY_BATCHES), in one
    transaction across every partitioned table; returns the batches removed."""
    with writing(db) as conn:
        tables = tables_with(conn, "main", "batch")
        stale = sorted(
            {
                b
                for t in tables
                for (b,) in conn.execute(
                    f"select distinct batch from main.{quote_ident(t)}"
                ).fetchall()
            }
            - set(keys)
        )
        if stale:
            marks = ", ".join("?" for _ in stale)
            for t in tables:
                conn.execute(
                    f"delete from main.{quote_ident(t)} where batch in ({marks})", stale
                ).fetchall()
        return stale


def fetch_frame(conn, sql: str, params: list | None = None):
    """``sql``'s rows as pandas through Arrow, typed as DuckDB's ``fetchdf`` types them.

    Arrow shares repeated strings between rows (a batch's server and resource names are repeated
    hundreds of times each), so a run that loads ten batches of results holds one object per distinct
    name instead of one per row: a fifth of the memory of ``fetchdf``.
    """
    return arrow_frame(conn.sql(sql, params=params or None).to_arrow_table())


def arrow_frame(table):
    """An Arrow table as pandas, typed as DuckDB's ``fetchdf`` types it."""
    import pyarrow as pa

    frame = table.to_pandas(date_as_object=False)
    for field in table.schema:
        col = frame[field.name]
        if pa.types.is_date(field.type) or (
            pa.types.is_timestamp(field.type) and field.type.tz is None
        ):
            frame[field.name] = col.astype("datetime64[us]")
        elif pa.types.is_integer(field.type) and col.dtype.kind == "f":  # nulls made it float
            frame[field.name] = col.astype(
                f"Int{field.type.bit_width}"
                if pa.types.is_signed_integer(field.type)
                else f"UInt{field.type.bit_width}"
            )
        elif pa.types.is_boolean(field.type) and col.dtype == object:
            frame[field.name] = col.astype("boolean")
        elif pa.types.is_decimal(
            field.type
        ):  # PostgreSQL's numeric (sum, avg): DuckDB gives floats
            frame[field.name] = col.astype("float64")
    return frame
