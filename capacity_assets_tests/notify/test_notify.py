"""``notify`` end to end: a DuckDB file, a real SMTP server on loopback, the notifications ledger."""

from __future__ import annotations

import email
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta
from email import policy

import duckdb
import pytest
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult

from capacity_assets.notify import SmtpSettings, SmtpUnavailable, notify
from capacity_assets.store.db import db_lock, drop_other_batches
from capacity_assets_tests.notify.conftest import (
    OMAR,
    PRIYA,
    SENDER,
    exc,
    fleet,
    free_port,
    ledger_rows,
    write_risk,
)

DASH = "https://dash.example.com/"
SECRET = "hunter2-Sup3r-s3cret"


def body(msg, kind: str) -> str:
    return msg.get_body((kind,)).get_content()


def by_recipient(msgs) -> dict:
    return {m["X-RcptTo"]: m for m in msgs}


def test_one_digest_per_manager_with_exactly_their_rows(risk_db, mail_server, caplog):
    caplog.set_level(logging.INFO)
    summary = notify(risk_db, mail_server.settings(), DASH)

    msgs = by_recipient(mail_server.messages())
    assert sorted(msgs) == ["omar@example.com", "priya.raman@example.com"]
    priya, omar = msgs["priya.raman@example.com"], msgs["omar@example.com"]
    assert priya["Subject"] == "Capacity risk: 3 new exceptions (1 critical) for Priya Raman"
    assert omar["Subject"] == "Capacity risk: 1 new exception (1 critical) for Omar Haddad"
    assert priya.get_content_type() == "multipart/alternative"

    plain, page = body(priya, "plain"), body(priya, "html")
    # critical first, then soonest; only her servers
    assert (
        plain.index("db-01 / disk")
        < plain.index('<b>srv "x" & y</b> / memory')
        < plain.index("web-01 / cpu")
    )
    assert "cache-01" not in plain and "batch-09" not in plain
    assert "first breach 2025-01-16 (in 10 days); trust high; application Payments; new" in plain
    assert f"{DASH}?server=db-01" in plain
    # every user value escaped in HTML; the link is percent-encoded
    assert "&lt;b&gt;srv &quot;x&quot; &amp; y&lt;/b&gt;" in page and "<b>srv" not in page
    assert "Pay &amp; &lt;Bill&gt;" in page
    assert (
        'href="https://dash.example.com/?server=%3Cb%3Esrv%20%22x%22%20%26%20y%3C%2Fb%3E"' in page
    )
    assert "already at the threshold" in body(omar, "plain")

    assert summary["sent"] == 2 and summary["rows"] == 4 and summary["failures"] == []
    assert summary["recipients"] == ["omar@example.com", "priya.raman@example.com"]
    ledger = ledger_rows(risk_db)
    assert sorted(zip(ledger["recipient"], ledger["server_id"])) == [
        ("omar@example.com", "cache-01"),
        ("priya.raman@example.com", '<b>srv "x" & y</b>'),
        ("priya.raman@example.com", "db-01"),
        ("priya.raman@example.com", "web-01"),
    ]
    assert set(ledger["kind"]) == {"digest"}
    assert set(ledger["message_id"]) == {priya["Message-ID"], omar["Message-ID"]}
    assert set(ledger["risk_batch"]) == {"batch_00", "batch_01"}


def test_managers_without_an_address_are_reported_and_not_recorded(risk_db, mail_server, caplog):
    summary = notify(risk_db, mail_server.settings(), DASH)
    missing = {(r["app_manager"], r["reason"]) for r in summary["without_address"]}
    assert missing == {("Lena Fischer", "no address"), ("Unassigned", "no address")}
    assert (
        "app manager 'Lena Fischer' (Search) has 1 exception(s) but no address: not sent"
        in caplog.text
    )
    assert not {"batch-09", "legacy-01"} & set(ledger_rows(risk_db)["server_id"])
    # reported again next time: nothing was recorded for them
    caplog.clear()
    again = notify(risk_db, mail_server.settings(), DASH)
    assert again["sent"] == 0 and len(again["without_address"]) == 2
    # and the run does not end by calling them 'nothing new'
    assert "nothing new or worsened in risk_exceptions" not in caplog.text
    assert (
        "no mail: 2 exception(s) of 2 app manager(s) without a usable address (named above) reached nobody"
        in caplog.text
    )


def test_second_run_sends_nothing(risk_db, mail_server):
    notify(risk_db, mail_server.settings(), DASH)
    before = ledger_rows(risk_db)
    summary = notify(risk_db, mail_server.settings(), DASH)
    assert (summary["messages"], summary["sent"], summary["rows"]) == (0, 0, 0)
    assert len(mail_server.messages()) == 2
    assert ledger_rows(risk_db).equals(before)


def test_worsened_exceptions_are_sent_again(risk_db, mail_server):
    notify(risk_db, mail_server.settings(), DASH)
    seen = {m["Message-ID"] for m in mail_server.messages()}

    def latest() -> list:
        new = [m for m in mail_server.messages() if m["Message-ID"] not in seen]
        seen.update(m["Message-ID"] for m in new)
        return new

    rows = fleet()
    rows[0] = exc("web-01", "cpu", "critical", 40, PRIYA, "Payments")  # warning -> critical
    rows[1] = exc(
        "db-01", "disk", "critical", 10 - 3, PRIYA, "Payments"
    )  # 3 days earlier: not news
    write_risk(risk_db, rows)
    summary = notify(risk_db, mail_server.settings(), DASH)
    assert summary["recipients"] == ["priya.raman@example.com"] and summary["rows"] == 1
    [msg] = latest()
    assert msg["Subject"] == "Capacity risk: 1 worsened exception (1 critical) for Priya Raman"
    plain = body(msg, "plain")
    assert (
        "web-01 / cpu" in plain and "now critical (was warning)" in plain and "db-01" not in plain
    )

    rows[1] = exc(
        "db-01", "disk", "critical", 10 - 7, PRIYA, "Payments"
    )  # 7 days earlier than last mailed
    write_risk(risk_db, rows)
    summary = notify(risk_db, mail_server.settings(), DASH)
    assert summary["rows"] == 1
    [msg] = latest()
    assert "db-01 / disk: first breach 2025-01-09 (in 3 days)" in body(msg, "plain")
    assert "breach 7 days earlier (was 2025-01-16)" in body(msg, "plain") and "web-01" not in body(
        msg, "plain"
    )
    assert len(ledger_rows(risk_db)) == 6


def test_refused_connection_leaves_the_ledger_unchanged(risk_db, mail_server, caplog):
    notify(risk_db, mail_server.settings(), DASH)
    before = ledger_rows(risk_db)
    write_risk(risk_db, fleet() + [exc("new-01", "cpu", "critical", 5, OMAR)])
    port = free_port()  # nothing listens there
    closed = SmtpSettings(
        host="127.0.0.1", port=port, user="robot", password=SECRET, sender=SENDER, timeout=5
    )
    with pytest.raises(SmtpUnavailable) as err:
        notify(risk_db, closed, DASH)
    text = str(err.value)
    assert f"cannot connect to SMTP server 127.0.0.1:{port}: connection refused" in text
    assert err.value.summary["sent"] == 0 and err.value.summary["messages"] == 1
    assert ledger_rows(risk_db).equals(before)
    assert f"127.0.0.1:{port}" in caplog.text and "nothing sent, nothing recorded" in caplog.text
    assert SECRET not in text and SECRET not in caplog.text
    # the exception is still due: the next run against a working server sends it
    assert notify(risk_db, mail_server.settings(), DASH)["rows"] == 1


def test_failed_login_never_shows_the_password(risk_db, start_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = start_server(
        authenticator=lambda *a: AuthResult(success=False, handled=False), auth_require_tls=False
    )
    settings = server.settings(user="robot", password=SECRET)
    with pytest.raises(SmtpUnavailable) as err:
        notify(risk_db, settings, DASH)
    assert f"SMTP server 127.0.0.1:{server.port} refused the login as 'robot': 535" in str(
        err.value
    )
    for text in (str(err.value), repr(err.value), caplog.text, repr(settings)):
        assert SECRET not in text
    assert ledger_rows(risk_db) is None and server.messages() == []


def test_a_refused_mailbox_is_reported_the_others_recorded(risk_db, start_server):
    class Picky(Mailbox):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("bounce@"):
                return "550 5.1.1 <bounce@example.com>: mailbox unavailable"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    write_risk(
        risk_db, fleet() + [exc("odd-01", "cpu", "warning", 30, ("Bo Unce", "bounce@example.com"))]
    )
    server = start_server(Picky)
    summary = notify(risk_db, server.settings(), DASH)
    assert summary["sent"] == 2 and summary["rows"] == 4
    [failure] = summary["failures"]
    assert failure["recipient"] == "bounce@example.com"
    assert "550 5.1.1 <bounce@example.com>: mailbox unavailable" in failure["error"]
    assert "bounce@example.com" not in set(ledger_rows(risk_db)["recipient"])
    retry = notify(risk_db, server.settings(), DASH)  # only the failed one is tried again
    assert retry["messages"] == 1 and len(retry["failures"]) == 1


def test_dry_run_writes_eml_files_and_records_nothing(risk_db, tmp_path, mail_server):
    unreachable = SmtpSettings(
        host="127.0.0.1", port=free_port(), sender=SENDER
    )  # proves no connection
    out = tmp_path / "eml"
    summary = notify(risk_db, unreachable, DASH, dry_run=True, out_dir=str(out))
    files = sorted(out.glob("*.eml"))
    assert [f.name for f in files] == [
        "001-digest-omar@example.com.eml",
        "002-digest-priya.raman@example.com.eml",
    ]
    assert (
        summary["files"] == [str(f) for f in files]
        and summary["rows"] == 4
        and summary["sent"] == 0
    )
    msg = email.message_from_bytes(files[1].read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Capacity risk: 3 new exceptions (1 critical) for Priya Raman"
    assert "db-01" in body(msg, "plain") and "<table" in body(msg, "html")
    assert ledger_rows(risk_db) is None
    assert notify(risk_db, mail_server.settings(), DASH)["sent"] == 2  # still all due


def test_the_database_is_not_locked_while_mail_is_sent(risk_db, start_server):
    """The SMTP server takes the database's exclusive lock while it receives each message: it could
    not if notify held even a shared lock during delivery."""
    got = []

    class Locking(Mailbox):
        async def handle_DATA(self, server, session, envelope):
            with db_lock(risk_db, exclusive=True, timeout=2):
                got.append(True)
            return await super().handle_DATA(server, session, envelope)

    server = start_server(Locking)
    assert notify(risk_db, server.settings(), DASH)["sent"] == 2
    assert got == [True, True]


def test_rollups_go_to_department_heads_weekly(tmp_path, mail_server):
    db = str(tmp_path / "cap.duckdb")
    heads = {"Payments & Billing": "pay-head@example.com", "Search": "search-head@example.com"}
    rows = [{**r, "department_head_email": heads.get(r["department"])} for r in fleet()]
    write_risk(db, rows, extra=("application", "app_manager_email", "department_head_email"))
    monday = datetime(2025, 1, 6, 6, 30)
    summary = notify(db, mail_server.settings(), DASH, rollup=True, now=monday)
    rollups = [m for m in mail_server.messages() if m["X-Capacity-Kind"] == "rollup"]
    assert [(m["X-RcptTo"], m["Subject"]) for m in rollups] == [
        (
            "pay-head@example.com",
            "Capacity risk weekly roll-up for Payments & Billing: 3 exceptions (1 critical)",
        ),
        (
            "search-head@example.com",
            "Capacity risk weekly roll-up for Search: 2 exceptions (1 critical)",
        ),
    ]
    search = body(rollups[1], "plain")
    # grouped by app manager, the one with critical exceptions first; unaddressed managers included
    assert search.index("Omar Haddad <omar@example.com>: 1 exception (1 critical)") < search.index(
        "Lena Fischer: 1 exception"
    )
    assert "&lt;b&gt;srv" in body(rollups[0], "html")
    assert [r["department"] for r in summary["without_address"] if r["kind"] == "rollup"] == [
        "Unassigned"
    ]
    ledger = ledger_rows(db)
    assert (ledger["kind"] == "rollup").sum() == 5 and (ledger["kind"] == "digest").sum() == 4

    assert (
        notify(db, mail_server.settings(), DASH, rollup=True, now=monday + timedelta(days=1))[
            "messages"
        ]
        == 0
    )
    again = notify(db, mail_server.settings(), DASH, rollup=True, now=monday + timedelta(days=7))
    assert again["sent"] == 2 and set(again["recipients"]) == set(heads.values())


def test_the_ledger_survives_a_change_of_batches(risk_db, mail_server):
    notify(risk_db, mail_server.settings(), DASH)
    before = ledger_rows(risk_db)
    assert drop_other_batches(risk_db, ["batch_00"]) == ["batch_01"]
    assert ledger_rows(risk_db).equals(before)  # batch_01's rows are still remembered


def test_missing_database_or_table_is_explained(tmp_path, mail_server):
    from capacity_assets.notify.run import NotifyError

    with pytest.raises(NotifyError, match="does not exist: run `capacity run`"):
        notify(str(tmp_path / "none.duckdb"), mail_server.settings())
    db = str(tmp_path / "empty.duckdb")
    duckdb.connect(db).close()
    with pytest.raises(NotifyError, match="has no risk_exceptions table yet"):
        notify(db, mail_server.settings())
    with pytest.raises(NotifyError, match="set CAPACITY_SMTP_HOST"):
        notify(db, SmtpSettings())


def test_the_package_imports_no_dagster():
    code = (
        "import sys, capacity_assets.notify, capacity_assets.notify.__main__; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_command_line_dry_run(risk_db, tmp_path):
    """``python -m capacity_assets.notify``: configuration errors exit 2, a dry run prints the summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPACITY_SMTP_")}
    cmd = [sys.executable, "-m", "capacity_assets.notify", "--db", risk_db]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "set CAPACITY_SMTP_HOST" in proc.stderr
    proc = subprocess.run(
        cmd + ["--dry-run", str(tmp_path / "eml")],
        env={**env, "CAPACITY_DASHBOARD_URL": DASH},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 4 and len(list((tmp_path / "eml").glob("*.eml"))) == 2
    assert ledger_rows(risk_db) is None
