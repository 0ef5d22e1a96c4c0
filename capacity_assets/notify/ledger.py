"""The ``notifications`` table: one row per exception listed in a delivered mail.

It is what makes notifying idempotent: ``digest.pending`` compares the current exceptions with the
latest row per (recipient, kind, server_id, resource), the ledger key. Rows are only ever appended,
for messages the SMTP server accepted, so the table is also the audit trail of who was told what
and when (``message_id`` finds the mail in the server's logs).

The batch is stored as ``risk_batch``, not ``batch``: ``store.db.drop_other_batches`` deletes the
rows of stale batch keys from every ``main`` table with a ``batch`` column, and forgetting what was
sent would mail every manager again after a change of CAPACITY_BATCHES.

Functions take an open connection of the store (``store.db.reading`` to read, ``writing`` to
record: one transaction).
"""

from __future__ import annotations

import pandas as pd

from capacity_assets.store.db import table_exists

TABLE = "notifications"
KINDS = ("digest", "rollup")
COLUMNS = {
    "recipient": "VARCHAR NOT NULL",
    "kind": "VARCHAR NOT NULL",
    "risk_batch": "VARCHAR",
    "server_id": "VARCHAR NOT NULL",
    "resource": "VARCHAR NOT NULL",
    "severity": "VARCHAR NOT NULL",
    "first_breach_date": "DATE",
    "sent_at": "TIMESTAMP NOT NULL",
    "message_id": "VARCHAR NOT NULL",
}
DDL = (
    f"create table if not exists main.{TABLE} ("
    + ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
    + f", check (kind in ({', '.join(repr(k) for k in KINDS)})))"
)
_DTYPES = {"first_breach_date": "datetime64[ns]", "sent_at": "datetime64[ns]"}


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES.get(c, "object")) for c in COLUMNS})


def ensure(conn) -> None:
    if not table_exists(
        conn, "main", TABLE
    ):  # DDL waits for a lock in PostgreSQL: only when needed
        conn.execute(DDL)


def read_sent(conn) -> pd.DataFrame:
    """Every ledger row (empty, with the columns, before the first mail: a read-only connection
    cannot create the table)."""
    if not table_exists(conn, "main", TABLE):
        return empty()
    cols = ", ".join(COLUMNS)
    df = conn.execute(
        f"select {cols} from main.{TABLE} order by sent_at, recipient, server_id, resource"
    ).fetchdf()
    for c, t in _DTYPES.items():
        df[c] = pd.to_datetime(df[c]).astype(t)
    return df


def record(conn, rows: pd.DataFrame) -> int:
    """Append ``rows`` (the ledger columns) in the caller's transaction (``store.db.writing``: all
    or nothing), creating the table on first use; returns the number of rows written."""
    if rows is None or rows.empty:
        return 0
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"ledger rows are missing columns {missing}")
    bad = set(rows["kind"]) - set(KINDS)
    if bad:
        raise ValueError(f"unknown notification kind(s) {sorted(bad)}; expected one of {KINDS}")
    frame = rows[list(COLUMNS)].copy()
    for c in COLUMNS:
        if c not in _DTYPES:
            frame[c] = frame[c].astype("object").where(frame[c].notna(), None)
    for c, t in _DTYPES.items():
        frame[c] = pd.to_datetime(frame[c]).astype(t)
    cols = ", ".join(COLUMNS)
    ensure(conn)
    conn.register("_notify_ledger_rows", frame)
    try:
        conn.execute(f"insert into main.{TABLE} ({cols}) select {cols} from _notify_ledger_rows")
    finally:
        conn.unregister("_notify_ledger_rows")
    return len(frame)
