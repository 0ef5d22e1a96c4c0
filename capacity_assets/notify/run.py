"""One notification run: read, compose, send, record what was delivered.

The database lock is held only to read (shared) and to record (exclusive), never while talking to
the mail server, so a slow SMTP server cannot stall a pipeline run. Two notify runs at once (say, a
sensor firing per batch) are serialised by their own lock, so the second
one sees what the first recorded and does not mail the same rows again (``store.db.exclusive``).

Delivery is at least once: if the process dies between the server's acceptance and the ledger
write, those rows are mailed again next time. Never the reverse (recorded but not delivered).
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from capacity_assets.notify import digest, ledger
from capacity_assets.notify.smtp import SmtpSettings, SmtpUnavailable
from capacity_assets.store.db import exclusive, exists, reading, table_exists, writing

RISK_TABLE = "risk_exceptions"
_log = logging.getLogger(__name__)


class NotifyError(RuntimeError):
    """Notifying could not be done or completed; the message says what was and was not sent.
    ``summary`` holds the run's summary so far."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


class NothingToRead(NotifyError):
    """No database, or no risk list in it yet: unusable input, not a failed delivery."""


def _read(db: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not exists(db):
        raise NothingToRead(f"{db} does not exist: run `capacity run` (or `capacity demo`) first")
    with reading(db) as conn:
        if not table_exists(conn, "main", RISK_TABLE):
            raise NothingToRead(
                f"{db} has no {RISK_TABLE} table yet: run `capacity run` (or `capacity demo`) first"
            )
        risk = conn.execute(f"select * from main.{RISK_TABLE}").fetchdf()
        return risk, ledger.read_sent(conn)


def _ledger_rows(rows: pd.DataFrame, kind: str, message_id: str, sent_at: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "recipient": rows["recipient"].astype(str),
            "kind": kind,
            "risk_batch": rows["batch"].astype(str),
            "server_id": rows["server_id"].astype(str),
            "resource": rows["resource"].astype(str),
            "severity": rows["severity"].astype(str),
            "first_breach_date": pd.to_datetime(rows["first_breach_date"]),
            "sent_at": pd.Timestamp(sent_at),
            "message_id": message_id,
        }
    )


def _eml_name(n: int, kind: str, recipient: str) -> str:
    return f"{n:03d}-{kind}-{re.sub(r'[^A-Za-z0-9@._-]+', '_', recipient)}.eml"


def _report_unaddressed(table: pd.DataFrame, kind: str, log) -> list[dict]:
    out = []
    for r in table.to_dict("records"):
        entry = {
            "kind": kind,
            "app_manager": r.get("app_manager"),
            "department": r["department"],
            "exceptions": int(r["exceptions"]),
            "critical": int(r["critical"]),
            "reason": r["reason"],
        }
        who = (
            f"app manager {entry['app_manager']!r} ({entry['department']})"
            if kind == "digest"
            else f"department {entry['department']!r} (roll-up)"
        )
        log.warning(
            f"notify: {who} has {entry['exceptions']} exception(s) but {entry['reason']}: not sent"
        )
        out.append(entry)
    return out


def notify(
    db: str,
    smtp: SmtpSettings,
    dashboard_url: str = "",
    dry_run: bool = False,
    out_dir: str | None = None,
    log=None,
    *,
    rollup: bool = False,
    now: datetime | None = None,
) -> dict:
    """Mail each app manager their new or worsened exceptions (``digest`` says which), and with
    ``rollup`` each department head a weekly list of all their department's exceptions.

    Returns a summary: ``messages`` (composed), ``sent``, ``recipients`` (delivered to), ``rows``
    (recorded, or that would be in a dry run), ``without_address`` (owners not mailed, with the
    reason), ``addresses_from`` (per kind, the hierarchy column the addresses came from),
    ``failures`` (recipient, error: the server's reply), ``files`` (dry run), ``dry_run``.

    ``dry_run`` writes one ``.eml`` file per message into ``out_dir`` and neither sends nor records.
    Raises ``SmtpUnavailable`` (nothing sent, nothing recorded) when the server cannot be reached
    or refuses the login, and ``NotifyError`` when there is nothing to read or delivered mail
    cannot be recorded. Safe to re-run: a second run with the same exceptions sends nothing.
    """
    log = log or _log
    now = now or datetime.now(timezone.utc)
    sent_at = now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now
    if dry_run and not out_dir:
        raise ValueError("a dry run needs out_dir, the folder the .eml files go to")
    if not dry_run and not smtp.configured:
        raise NotifyError("no SMTP server configured: set CAPACITY_SMTP_HOST (or use a dry run)")
    sender = smtp.sender or "capacity@localhost"
    summary = {
        "dry_run": dry_run,
        "messages": 0,
        "sent": 0,
        "recipients": [],
        "rows": 0,
        "without_address": [],
        "addresses_from": {},
        "failures": [],
        "files": [],
    }

    # serialise notify runs (not the pipeline): this lock is held across SMTP on purpose
    with exclusive(db, "notify") if not dry_run else nullcontext():
        risk, sent = _read(db)
        kinds = {"digest": digest.EMAIL_COLUMN}
        kinds |= {"rollup": digest.HEAD_EMAIL_COLUMN} if rollup else {}
        for kind, column in kinds.items():
            summary["addresses_from"][kind] = source = digest.address_source(risk, column)
            log.info(f"notify: {kind} addresses from {source}")
        due = digest.pending(risk, sent)
        summary["without_address"] = _report_unaddressed(digest.unaddressed(risk), "digest", log)
        planned = [
            ("digest", m, rows)
            for m, rows in digest.digest_messages(due, sender, dashboard_url, now)
        ]
        if rollup:
            heads = digest.unaddressed(risk, digest.HEAD_EMAIL_COLUMN, who="department")
            summary["without_address"] += _report_unaddressed(heads, "rollup", log)
            planned += [
                ("rollup", m, rows)
                for m, rows in digest.rollup_messages(
                    digest.rollup_rows(risk, sent, now), sender, dashboard_url, now
                )
            ]
        summary["messages"] = len(planned)
        if not planned:
            managers = [e for e in summary["without_address"] if e["kind"] == "digest"]
            heads = [e for e in summary["without_address"] if e["kind"] == "rollup"]
            if managers or heads:  # 'nothing new' would hide exceptions that reached nobody
                log.warning(
                    f"notify: no mail: {sum(e['exceptions'] for e in managers)} exception(s) of "
                    f"{len(managers)} app manager(s) without a usable address (named above) reached nobody"
                    + (
                        f", and {len(heads)} department(s) have no head to send the roll-up to"
                        if heads
                        else ""
                    )
                    + "; nothing new or worsened for the owners with one"
                )
            else:
                log.info(
                    f"notify: nothing new or worsened in {RISK_TABLE} ({len(risk)} exceptions): no mail"
                )
            return summary

        if dry_run:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for n, (kind, msg, rows) in enumerate(planned, 1):
                path = out / _eml_name(n, kind, rows["recipient"].iloc[0])
                path.write_bytes(msg.as_bytes())
                summary["files"].append(str(path))
                summary["rows"] += len(rows)
            summary["recipients"] = sorted({rows["recipient"].iloc[0] for _, _, rows in planned})
            log.info(
                f"notify (dry run): wrote {len(planned)} message(s) to {out}; nothing sent or recorded"
            )
            return summary

        try:
            results = smtp.send([m for _, m, _ in planned])
        except SmtpUnavailable as e:
            log.error(f"notify: {e}; nothing sent, nothing recorded")
            e.summary = summary
            raise
        delivered = []
        for (kind, _msg, rows), res in zip(planned, results):
            if res.ok:
                delivered.append(_ledger_rows(rows, kind, res.message_id, sent_at))
                summary["recipients"].append(res.recipient)
            else:
                summary["failures"].append(
                    {"recipient": res.recipient, "kind": kind, "error": res.error}
                )
                log.error(
                    f"notify: {kind} to {res.recipient} not sent: {res.error} (will be retried next run)"
                )
        summary["sent"] = len(delivered)
        summary["recipients"] = sorted(set(summary["recipients"]))
        if delivered:
            rows = pd.concat(delivered, ignore_index=True)
            try:
                with writing(db) as conn:
                    summary["rows"] = ledger.record(conn, rows)
            except Exception as e:  # noqa: BLE001 - anything: the mails are out, say so
                msg = (
                    f"{len(delivered)} message(s) were delivered but could not be recorded in "
                    f"{ledger.TABLE} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    f"they will be sent again on the next run"
                )
                log.error(f"notify: {msg}")
                raise NotifyError(msg, summary) from e
        log.info(
            f"notify: sent {summary['sent']} of {len(planned)} message(s) to {len(summary['recipients'])} "
            f"recipient(s), {summary['rows']} exception(s) recorded; {len(summary['failures'])} failed, "
            f"{len(summary['without_address'])} owner(s) without an address"
        )
        return summary
