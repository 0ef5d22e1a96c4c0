"""Opening the DuckDB file: one advisory lock per file, shared by every process that touches it.

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

DEFAULT_TIMEOUT_S = 600.0
NOTICE_AFTER_S = 10.0
log = logging.getLogger(__name__)


class Database(str):
    """A database path that carries how long to wait for it (CAPACITY_LOCK_TIMEOUT, read by
    ``config``): a ``str``, so every message, path operation and caller that wants the plain path
    keeps working, while the store's functions need no timeout argument threaded through them."""

    lock_timeout: float

    def __new__(cls, path: str | os.PathLike, lock_timeout: float = DEFAULT_TIMEOUT_S):
        self = super().__new__(cls, os.fspath(path))
        self.lock_timeout = lock_timeout
        return self


def lock_timeout(db) -> float:
    """Seconds to wait for ``db``: its own (a ``Database``) or the default."""
    return getattr(db, "lock_timeout", DEFAULT_TIMEOUT_S)


class DatabaseBusy(RuntimeError):
    """Another process held the database for longer than we were willing to wait."""


def lock_path(db: str | os.PathLike) -> Path:
    return Path(str(db) + ".lock")


@contextmanager
def db_lock(db: str | os.PathLike, exclusive: bool = True, timeout: float | None = None):
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
    """A read-only connection to ``db`` under its shared lock, closed on exit: a writing run waits
    for at most this one read."""
    with db_lock(db, exclusive=False, timeout=timeout):
        conn = connect(db, read_only=True)
        try:
            yield conn
        finally:
            conn.close()


class StorageError(RuntimeError):
    """The database file cannot be used; the message names it."""


def connect(
    db: str, read_only: bool = False, timeout: float | None = None
) -> duckdb.DuckDBPyConnection:
    """Open ``db`` with a message a user can act on when it is not a DuckDB file or another program
    (a DuckDB shell, a notebook: anything that skips ``<db>.lock``) holds it; such a holder is waited
    for up to CAPACITY_LOCK_TIMEOUT, as the lock file is. DuckDB refuses before writing a byte, so
    the file is never changed by a refusal."""
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
    return (
        conn.execute(
            "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
        > 0
    )


def drop_other_batches(db: str, keys: list[str]) -> list[str]:
    """Delete rows of batches that are not in ``keys`` (left by an earlier CAPACITY_BATCHES), in one
    transaction across every partitioned table; returns the batches removed."""
    with db_lock(db):
        conn = connect(db)
        try:
            tables = [
                t
                for (t,) in conn.execute(
                    "select distinct table_name from duckdb_columns() where schema_name = 'main' "
                    "and column_name = 'batch'"
                ).fetchall()
            ]
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
                conn.execute("begin transaction").fetchall()
                for t in tables:
                    conn.execute(
                        f"delete from main.{quote_ident(t)} where batch in ({marks})", stale
                    ).fetchall()
                conn.execute("commit").fetchall()
            return stale
        finally:
            conn.close()


def fetch_frame(conn, sql: str, params: list | None = None):
    """``sql``'s rows as pandas through Arrow, typed as DuckDB's ``fetchdf`` types them.

    Arrow shares repeated strings between rows (a batch's server and resource names are repeated
    hundreds of times each), so a run that loads ten batches of results holds one object per distinct
    name instead of one per row: a fifth of the memory of ``fetchdf``.
    """
    import pyarrow as pa

    table = conn.sql(sql, params=params or None).to_arrow_table()
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
    return frame
