"""A real SMTP server on loopback (aiosmtpd, delivering into a Maildir) and hand-made risk_exceptions.

The server runs in a thread of the test process (aiosmtpd's Controller), so each test gets a fresh
one in milliseconds; messages travel over a real TCP socket through smtplib.
"""

from __future__ import annotations

import email
import mailbox
import socket
from datetime import date, timedelta
from email import policy
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from capacity_assets.notify.smtp import SmtpSettings
from capacity_assets.schema import RISK_EXCEPTIONS

SENDER = "Capacity planning <capacity@example.com>"
TODAY = date(2025, 1, 6)  # the last history day of the hand-made forecasts
PRIYA = ("Priya Raman", "Priya.Raman@Example.com")
OMAR = ("Omar Haddad", "omar@example.com")
LENA = ("Lena Fischer", None)
SQL_TYPES = {"string": "VARCHAR", "datetime64[ns]": "DATE", "int64": "BIGINT", "float64": "DOUBLE"}


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServer:
    """aiosmtpd on 127.0.0.1, storing every accepted message in ``directory`` (a Maildir)."""

    def __init__(self, directory: Path, handler=None, **smtp_kwargs):
        self.directory = directory
        self.port = free_port()
        self.controller = Controller(
            handler or Mailbox(directory), hostname="127.0.0.1", port=self.port, **smtp_kwargs
        )
        self.controller.start()

    def settings(self, **overrides) -> SmtpSettings:
        return SmtpSettings(
            **{"host": "127.0.0.1", "port": self.port, "sender": SENDER, "timeout": 5, **overrides}
        )

    def messages(self) -> list[email.message.EmailMessage]:
        """Delivered messages, sorted by envelope recipient then subject."""
        if not self.directory.exists():
            return []
        box = mailbox.Maildir(self.directory, create=False)
        msgs = [
            email.message_from_bytes(box.get_bytes(k), policy=policy.default) for k in box.keys()
        ]
        return sorted(msgs, key=lambda m: (m["X-RcptTo"], m["Subject"]))

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def mail_server(tmp_path):
    server = MailServer(tmp_path / "maildir")
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path):
    """Start servers with custom handlers or SMTP options; all are stopped at the end."""
    started = []

    def start(handler=None, **kwargs) -> MailServer:
        directory = tmp_path / f"maildir{len(started)}"
        server = MailServer(directory, handler(directory) if handler else None, **kwargs)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


def exc(
    server_id: str,
    resource: str,
    severity: str,
    days: int,
    manager: tuple,
    application: str | None = None,
    department: str = "Payments & Billing",
    batch: str = "batch_00",
    head: str | None = None,
) -> dict:
    """One risk_exceptions row as the pipeline writes it (plus the extra hierarchy columns)."""
    return {
        "batch": batch,
        "server_id": server_id,
        "resource": resource,
        "department": department,
        "app_manager": manager[0],
        "first_breach_date": TODAY + timedelta(days=days),
        "days_to_breach": days,
        "peak_upper": 99.0,
        "peak_yhat": 97.0 if severity == "critical" else 91.0,
        "model": "prophet",
        "champion_mape": 6.5,
        "trust": "high",
        "severity": severity,
        "application": application,
        "app_manager_email": manager[1],
        "department_head_email": head,
    }


def fleet() -> list[dict]:
    return [
        exc("web-01", "cpu", "warning", 40, PRIYA, "Payments"),
        exc("db-01", "disk", "critical", 10, PRIYA, "Payments"),
        exc('<b>srv "x" & y</b>', "memory", "warning", 25, PRIYA, "Pay & <Bill>", batch="batch_01"),
        exc("cache-01", "memory", "critical", 0, OMAR, "Search", department="Search"),
        exc("batch-09", "cpu", "warning", 60, LENA, "Batch", department="Search"),
        exc("legacy-01", "disk", "warning", 70, ("Unassigned", None), department="Unassigned"),
    ]


def write_risk(
    db: str | Path, rows: list[dict], extra=("application", "app_manager_email")
) -> None:
    """Replace risk_exceptions in ``db`` with ``rows``: the contract's columns, then ``extra``."""
    columns = {c: SQL_TYPES[t] for c, t in RISK_EXCEPTIONS.items()} | {c: "VARCHAR" for c in extra}
    conn = duckdb.connect(str(db))
    try:
        conn.execute("drop table if exists main.risk_exceptions")
        conn.execute(
            "create table main.risk_exceptions ("
            + ", ".join(f'"{c}" {t}' for c, t in columns.items())
            + ")"
        )
        if rows:
            marks = ", ".join("?" for _ in columns)
            conn.executemany(
                f"insert into main.risk_exceptions values ({marks})",
                [[r.get(c) for c in columns] for r in rows],
            )
    finally:
        conn.close()


def ledger_rows(db: str | Path) -> pd.DataFrame | None:
    """The notifications table sorted, or None when it does not exist."""
    conn = duckdb.connect(str(db), read_only=True)
    try:
        if not conn.execute(
            "select count(*) from duckdb_tables() where table_name = 'notifications'"
        ).fetchone()[0]:
            return None
        return conn.execute(
            "select * from main.notifications order by recipient, kind, server_id, resource, "
            "sent_at"
        ).fetchdf()
    finally:
        conn.close()


@pytest.fixture
def risk_db(tmp_path) -> str:
    db = str(tmp_path / "cap.duckdb")
    write_risk(db, fleet())
    return db
