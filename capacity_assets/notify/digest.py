"""Which exceptions to mail now, and the mails themselves.

Pure pandas + the standard ``email`` package (no I/O, no Dagster), so the rules are tested on
hand-made frames and any caller can reuse them.

Recipients come from optional hierarchy columns that the pipeline appends to ``risk_exceptions``:
``app_manager_email`` (digests) and ``department_head_email`` (roll-ups), matched ignoring case.
Without such a column, the values of ``app_manager`` (``department_head``) that are addresses are
used: a CMDB export often holds the manager's e-mail there, and a first run should reach them.
A missing, empty or malformed address means the manager is reported (``unaddressed``), never mailed.

"New or worsened" is decided per recipient address, server and resource (the ledger key), against
the last digest the ledger holds for that key:

* new: never sent to this address. A server that changes owner is new to its new owner;
* now critical: the last digest said warning, now it is critical;
* earlier: ``first_breach_date`` is at least ``WORSENED_DAYS`` (7) days earlier than the date last
  sent. Absolute dates, not ``days_to_breach``, which shrinks by itself as time passes.

Nothing else is resent: not a breach that moved later, not critical -> warning, and not an
exception that disappeared and came back no worse than what was last sent, because a series
hovering at the threshold would otherwise mail its owner every week. The department roll-up lists
every current exception, mailed or not, once a week.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from urllib.parse import quote

import numpy as np
import pandas as pd

from capacity_assets.risk.breaches import SEVERITY_ORDER, sort_risk
from capacity_assets.schema import SERIES_KEY, find_column

EMAIL_COLUMN = "app_manager_email"
HEAD_EMAIL_COLUMN = "department_head_email"
# the owner column whose values are taken as addresses when the address column is absent
FALLBACK_COLUMN = {EMAIL_COLUMN: "app_manager", HEAD_EMAIL_COLUMN: "department_head"}
APPLICATION_COLUMN = "application"
WORSENED_DAYS = 7
# roll-ups are weekly; one day of slack so that next Monday's run, a few minutes earlier than this
# one, still sends
ROLLUP_MIN_GAP = pd.Timedelta(days=6)
# the sent ledger's key: "new or worsened" is judged per address, so a new owner is told afresh
LEDGER_KEY = ["recipient", *SERIES_KEY]

# a plain ASCII address: enough for corporate mail, and nothing that could smuggle a second
# recipient or a header into the message
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


# --- recipients ------------------------------------------------------------------------------------
def normalize_address(value) -> str | None:
    """'Priya Raman <Priya@Example.com>' or 'mailto:priya@example.com' -> 'priya@example.com';
    None when empty or not exactly one plain address (a list 'a@x; b@x' is refused, not guessed)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    s = str(value).strip()
    m = re.fullmatch(r"[^<>]*<([^<>]*)>", s)
    if m:
        s = m.group(1).strip()
    if s.lower().startswith("mailto:"):
        s = s[7:]
    s = s.lower()
    return s if _ADDRESS.fullmatch(s) else None


def _address_problem(value, missing: str | None = None) -> str:
    """Why ``value`` addresses nobody; ``missing``: the address column absent, so ``value`` is the
    owner's name column, where a name is no mistake."""
    if value is None or pd.isna(value) or not str(value).strip():
        return "no address"
    if missing:
        return f"{str(value).strip()!r} is not an address, and there is no {missing} column"
    return f"invalid address {str(value).strip()!r}"


def address_column(risk: pd.DataFrame, column: str = EMAIL_COLUMN) -> str | None:
    """The column of ``risk`` that addresses ``column``'s mails: ``column`` itself (any case), else
    its owner column (``FALLBACK_COLUMN``) when at least one of its values is an address, else None."""
    col = find_column(risk, column)
    if col is not None:
        return col
    owner = find_column(risk, FALLBACK_COLUMN.get(column, ""))
    if owner is not None and risk[owner].map(normalize_address).notna().any():
        return owner
    return None


def address_source(risk: pd.DataFrame, column: str = EMAIL_COLUMN) -> str:
    """Where ``column``'s addresses come from, for the run summary and ``capacity notify``:
    'app_manager_email', 'app_manager (no app_manager_email column)' or 'none (...)'."""
    col = address_column(risk, column)
    if col is None:
        owner = column.removesuffix("_email")
        return f"none (no {column} column, and no {owner} value is an address)"
    return col if col == find_column(risk, column) else f"{col} (no {column} column)"


def address_line(risk: pd.DataFrame) -> str:
    """One line for the run summary: where digests go, and how many owners at risk it reaches."""
    source = address_source(risk)
    line = (
        f"digest addresses: {source}"
        if source.startswith("none")
        else f"digest addresses from {source}"
    )
    if risk.empty or "app_manager" not in risk.columns:
        return line
    managers = risk["app_manager"].nunique(dropna=False)
    reached = _with_recipient(risk, EMAIL_COLUMN).dropna(subset=["recipient"])
    return f"{line}: {reached['app_manager'].nunique()} of {managers} app managers at risk have one"


def _with_recipient(risk: pd.DataFrame, column: str) -> pd.DataFrame:
    col = address_column(risk, column)
    out = risk.copy()
    out["recipient"] = (
        out[col].map(normalize_address) if col is not None else pd.Series(None, index=out.index)
    )
    out["recipient"] = out["recipient"].astype("object")
    return out


def unaddressed(
    risk: pd.DataFrame, column: str = EMAIL_COLUMN, who: str = "app_manager"
) -> pd.DataFrame:
    """Owners with exceptions but no usable address: ``who``, department, exceptions, critical, reason.
    They are reported on every run (nothing is recorded for them) until the hierarchy gives one."""
    cols = (
        [who, "department", "exceptions", "critical", "reason"]
        if who != "department"
        else ["department", "exceptions", "critical", "reason"]
    )
    if risk.empty:
        return pd.DataFrame(columns=cols)
    col = address_column(risk, column)
    missing = column if col is not None and col != find_column(risk, column) else None
    r = _with_recipient(risk, column)
    r = r[r["recipient"].isna()].copy()
    if r.empty:
        return pd.DataFrame(columns=cols)
    r["reason"] = (
        f"risk_exceptions has no {column} column (add it to the hierarchy file)"
        if col is None
        else r[col].map(lambda v: _address_problem(v, missing))
    )
    r["critical"] = r["severity"].eq("critical").astype(int)
    keys = list(dict.fromkeys([who, "department", "reason"]))
    out = (
        r.groupby(keys, dropna=False)
        .agg(exceptions=("server_id", "size"), critical=("critical", "sum"))
        .reset_index()
        .sort_values(keys, kind="stable")
        .reset_index(drop=True)
    )
    return out[cols]


# --- what to send ----------------------------------------------------------------------------------
def last_sent(sent: pd.DataFrame | None, kind: str = "digest") -> pd.DataFrame:
    """The latest ledger row per recipient, server and resource for ``kind``."""
    cols = LEDGER_KEY + ["previous_severity", "previous_first_breach_date", "previous_sent_at"]
    if sent is None or sent.empty:
        return pd.DataFrame(
            {
                c: pd.Series(dtype="datetime64[ns]" if "date" in c or "_at" in c else "object")
                for c in cols
            }
        )
    s = sent[sent["kind"] == kind].copy()
    s["sent_at"] = pd.to_datetime(s["sent_at"])
    s = s.sort_values("sent_at", kind="stable").drop_duplicates(LEDGER_KEY, keep="last")
    s = s.rename(
        columns={
            "severity": "previous_severity",
            "first_breach_date": "previous_first_breach_date",
            "sent_at": "previous_sent_at",
        }
    )
    s["previous_first_breach_date"] = pd.to_datetime(s["previous_first_breach_date"]).astype(
        "datetime64[ns]"
    )
    s["previous_sent_at"] = s["previous_sent_at"].astype("datetime64[ns]")
    return s[cols].reset_index(drop=True)


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    """By recipient, then critical first, soonest, server and resource (reruns compose identical mails)."""
    if rows.empty:
        return rows.reset_index(drop=True)
    return sort_risk(rows).sort_values("recipient", kind="stable").reset_index(drop=True)


def pending(
    risk: pd.DataFrame, sent: pd.DataFrame | None, worsened_days: int = WORSENED_DAYS
) -> pd.DataFrame:
    """Digest rows to send now: the risk rows of addressed managers that are new or worsened for
    their recipient (module docstring), with ``recipient``, ``change`` ('new', 'critical',
    'earlier') and what was last sent (``previous_severity``, ``previous_first_breach_date``).
    Rows of managers without an address are left out: see ``unaddressed``."""
    r = _with_recipient(risk, EMAIL_COLUMN)
    r = r[r["recipient"].notna()]
    if r.empty:
        return r.assign(
            change=pd.Series(dtype="object"),
            previous_severity=pd.Series(dtype="object"),
            previous_first_breach_date=pd.Series(dtype="datetime64[ns]"),
        ).reset_index(drop=True)
    r = r.assign(first_breach_date=pd.to_datetime(r["first_breach_date"]).astype("datetime64[ns]"))
    # one row per key (a server listed under two batch keys after a re-batching): the most urgent
    r = sort_risk(r).drop_duplicates(LEDGER_KEY, keep="first")
    m = r.merge(last_sent(sent, "digest"), on=LEDGER_KEY, how="left")
    worst = len(SEVERITY_ORDER)
    rank = m["severity"].map(SEVERITY_ORDER).fillna(worst)
    prev_rank = m["previous_severity"].map(SEVERITY_ORDER).fillna(worst)
    new = m["previous_sent_at"].isna()
    critical = ~new & (rank < prev_rank)
    earlier = ~new & (
        m["first_breach_date"] <= m["previous_first_breach_date"] - pd.Timedelta(days=worsened_days)
    )
    m["change"] = np.select(
        [new, critical, earlier.fillna(False)], ["new", "critical", "earlier"], default=""
    )
    out = m[m["change"] != ""].drop(columns="previous_sent_at")
    return _sorted(out)


def rollup_rows(
    risk: pd.DataFrame,
    sent: pd.DataFrame | None,
    now: datetime | None = None,
    min_gap: pd.Timedelta = ROLLUP_MIN_GAP,
) -> pd.DataFrame:
    """Every current exception of the departments whose head (``department_head_email``) is due a
    roll-up: none sent to that address yet, or the last one at least ``min_gap`` ago. A head of
    several departments gets them all in the same run, one mail per department."""
    r = _with_recipient(risk, HEAD_EMAIL_COLUMN)
    r = r[r["recipient"].notna()]
    if r.empty or sent is None or sent.empty:
        return _sorted(r)
    now = pd.Timestamp(_utc_naive(now))
    s = sent[sent["kind"] == "rollup"]
    last = pd.to_datetime(s["sent_at"]).groupby(s["recipient"]).max()
    recent = set(last[last > now - min_gap].index)
    return _sorted(r[~r["recipient"].isin(recent)])


# --- the mails ---------------------------------------------------------------------------------------
def _utc_naive(now: datetime | None) -> datetime:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).replace(tzinfo=None) if now.tzinfo else now


def _clean(value) -> str:
    """One line of text: user values may hold newlines, which would break a header or the layout."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return " ".join(str(value).split())


def _date(value) -> str:
    return "" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def deep_link(dashboard_url: str, server_id) -> str:
    """The dashboard's deep dive of one server; '' without a dashboard URL."""
    if not dashboard_url:
        return ""
    return f"{dashboard_url.rstrip('/')}/?server={quote(str(server_id), safe='')}"


def _when(row) -> str:
    days = int(row["days_to_breach"])
    if days <= 0:
        return f"already at the threshold (the week to {_date(row['first_breach_date'])} averaged at or above it)"
    return (
        f"first breach {_date(row['first_breach_date'])} (in {days} day{'s' if days != 1 else ''})"
    )


def _change(row) -> str:
    change = row.get("change", "")
    if change == "new":
        return "new"
    if change == "critical":
        return f"now critical (was {_clean(row['previous_severity'])})"
    if change == "earlier":
        days = (
            pd.Timestamp(row["previous_first_breach_date"]) - pd.Timestamp(row["first_breach_date"])
        ).days
        return f"breach {days} days earlier (was {_date(row['previous_first_breach_date'])})"
    return ""


def _items(rows: pd.DataFrame, dashboard_url: str) -> list[dict]:
    """Each row as display strings (raw text: the caller escapes for HTML)."""
    app = find_column(rows, APPLICATION_COLUMN)
    out = []
    for _, row in rows.iterrows():
        out.append(
            {
                "severity": _clean(row["severity"]),
                "server": _clean(row["server_id"]),
                "resource": _clean(row["resource"]),
                "when": _when(row),
                "date": _date(row["first_breach_date"]),
                "days": str(int(row["days_to_breach"])),
                "trust": _clean(row["trust"]),
                "application": _clean(row[app]) if app is not None else None,
                "change": _change(row),
                "link": deep_link(dashboard_url, row["server_id"]),
            }
        )
    return out


def _plain_lines(items: list[dict]) -> list[str]:
    lines = []
    for sev in dict.fromkeys(i["severity"] for i in items):
        group = [i for i in items if i["severity"] == sev]
        lines += ["", f"{sev.upper()} ({len(group)})"]
        for i in group:
            facts = [i["when"], f"trust {i['trust']}"]
            if i["application"]:
                facts.append(f"application {i['application']}")
            if i["change"]:
                facts.append(i["change"])
            lines.append(f"- {i['server']} / {i['resource']}: " + "; ".join(facts))
            if i["link"]:
                lines.append(f"  {i['link']}")
    return lines


SEVERITY_COLOURS = {"critical": "#b42318", "warning": "#b54708"}


def _html_table(items: list[dict], with_change: bool) -> str:
    e = lambda s: html.escape(s, quote=True)  # noqa: E731
    has_app = any(i["application"] is not None for i in items)
    heads = ["Severity", "Server", "Resource", "First breach", "Days to breach", "Trust"]
    heads += ["Application"] if has_app else []
    heads += ["Why now"] if with_change else []
    cell = 'style="padding:4px 8px;border-bottom:1px solid #ddd;text-align:left"'
    out = [
        '<table style="border-collapse:collapse;font-family:sans-serif;font-size:14px">',
        "<tr>" + "".join(f"<th {cell}>{h}</th>" for h in heads) + "</tr>",
    ]
    for i in items:
        colour = SEVERITY_COLOURS.get(i["severity"], "#333")
        server = f'<a href="{e(i["link"])}">{e(i["server"])}</a>' if i["link"] else e(i["server"])
        cells = [
            f'<b style="color:{colour}">{e(i["severity"])}</b>',
            server,
            e(i["resource"]),
            e(i["date"]),
            e(i["days"]),
            e(i["trust"]),
        ]
        cells += [e(i["application"] or "")] if has_app else []
        cells += [e(i["change"])] if with_change else []
        out.append("<tr>" + "".join(f"<td {cell}>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def _html_page(paragraphs_before: list[str], body: str, paragraphs_after: list[str]) -> str:
    p = lambda t: f'<p style="font-family:sans-serif;font-size:14px">{t}</p>'  # noqa: E731
    return (
        "<!DOCTYPE html>\n<html><body>\n"
        + "\n".join(map(p, paragraphs_before))
        + "\n"
        + body
        + "\n"
        + "\n".join(map(p, paragraphs_after))
        + "\n</body></html>\n"
    )


def _name(rows: pd.DataFrame, column: str, fallback: str) -> str:
    names = rows[column].map(_clean) if column in rows.columns else pd.Series(dtype="object")
    names = names[(names != "") & (names != "Unassigned")]
    return names.value_counts().index[0] if len(names) else fallback


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _message(
    sender: str,
    recipient: str,
    name: str,
    subject: str,
    plain: str,
    html_body: str,
    kind: str,
    now: datetime | None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = Address(display_name="" if name == recipient else name, addr_spec=recipient)
    msg["Date"] = format_datetime(_utc_naive(now).replace(tzinfo=timezone.utc))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid("capacity", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg["X-Capacity-Kind"] = kind
    msg.set_content(plain)
    msg.add_alternative(html_body, subtype="html")
    return msg


FOOTER_DIGEST = (
    "You get this digest because the business hierarchy names you as the app manager of these "
    "servers. An exception is mailed once, and again only if it becomes critical or its first "
    "breach moves at least {days} days earlier."
)
LEGEND = (
    "Critical: the forecast itself reaches the threshold. Warning: only its upper bound does. "
    "Trust reflects the forecast's backtest error (high, medium, low)."
)


def digest_messages(
    rows: pd.DataFrame, sender: str, dashboard_url: str = "", now: datetime | None = None
) -> list[tuple[EmailMessage, pd.DataFrame]]:
    """``compose``, with the rows each message lists (what the ledger records once it is sent)."""
    out = []
    for recipient, group in _sorted(rows).groupby("recipient", sort=True):
        group = group.reset_index(drop=True)
        name = _name(group, "app_manager", recipient)
        if normalize_address(name) == recipient:  # addressed from app_manager itself
            name = recipient
        items = _items(group, dashboard_url)
        n, crit = len(group), int(group["severity"].eq("critical").sum())
        new = int(group["change"].eq("new").sum()) if "change" in group else n
        parts = [f"{new} new"] if new else []
        parts += [f"{n - new} worsened"] if n - new else []
        what = " and ".join(parts) + (" exception" if n == 1 else " exceptions")
        subject = f"Capacity risk: {what}{f' ({crit} critical)' if crit else ''} for {name}"
        intro = (
            f"{_plural(n, 'capacity exception')} on servers you manage "
            f"{'is' if n == 1 else 'are'} new or worse since your last digest"
            f"{f', {crit} of them critical' if crit else ''}."
        )
        footer = FOOTER_DIGEST.format(days=WORSENED_DAYS)
        plain = "\n".join(
            [f"Hello {name},", "", intro, *_plain_lines(items), "", LEGEND, footer, ""]
        )
        e = html.escape
        page = _html_page(
            [f"Hello {e(name)},", e(intro)],
            _html_table(items, with_change=True),
            [e(LEGEND), e(footer)],
        )
        out.append((_message(sender, recipient, name, subject, plain, page, "digest", now), group))
    return out


def compose(
    rows: pd.DataFrame, sender: str, dashboard_url: str = "", now: datetime | None = None
) -> list[EmailMessage]:
    """One digest per recipient of ``pending``'s rows, critical first, as plain text with an HTML
    alternative (every user value escaped). Links go to the dashboard's deep dive when
    ``dashboard_url`` is given."""
    return [m for m, _ in digest_messages(rows, sender, dashboard_url, now)]


def rollup_messages(
    rows: pd.DataFrame, sender: str, dashboard_url: str = "", now: datetime | None = None
) -> list[tuple[EmailMessage, pd.DataFrame]]:
    """``compose_rollups``, with the rows each message lists."""
    out = []
    if rows.empty:
        return out
    manager_col = address_column(rows, EMAIL_COLUMN)
    for (recipient, department), group in _sorted(rows).groupby(
        ["recipient", "department"], sort=True
    ):
        group = group.reset_index(drop=True)
        dep = _clean(department)
        n, crit = len(group), int(group["severity"].eq("critical").sum())
        subject = (
            f"Capacity risk weekly roll-up for {dep}: {_plural(n, 'exception')}"
            f"{f' ({crit} critical)' if crit else ''}"
        )
        intro = (
            f"{dep} has {_plural(n, 'server resource')} at risk of running out of capacity"
            f"{f', {crit} of them critical' if crit else ''}, by app manager:"
        )
        plain, blocks = ["Hello,", "", intro], []
        g = group.assign(
            _crit=group["severity"].eq("critical"), _mgr=group["app_manager"].map(_clean)
        )
        order = (
            g.groupby("_mgr")["_crit"]
            .sum()
            .reset_index()
            .sort_values(["_crit", "_mgr"], ascending=[False, True])["_mgr"]
        )
        for mgr in order:
            mine = g[g["_mgr"] == mgr].drop(columns=["_crit", "_mgr"])
            addr = normalize_address(mine[manager_col].iloc[0]) if manager_col is not None else None
            mcrit = int(mine["severity"].eq("critical").sum())
            title = (
                f"{mgr or 'Unassigned'}{f' <{addr}>' if addr else ''}: {_plural(len(mine), 'exception')}"
                f"{f' ({mcrit} critical)' if mcrit else ''}"
            )
            items = _items(mine, dashboard_url)
            plain += [
                "",
                title,
                *("  " + line if line else line for line in _plain_lines(items)[1:]),
            ]
            blocks.append(
                f'<h3 style="font-family:sans-serif">{html.escape(title)}</h3>\n'
                + _html_table(items, with_change=False)
            )
        footer = (
            "You get this weekly roll-up as the head of this department in the business hierarchy."
        )
        plain += ["", LEGEND, footer, ""]
        page = _html_page(
            ["Hello,", html.escape(intro)],
            "\n".join(blocks),
            [html.escape(LEGEND), html.escape(footer)],
        )
        out.append(
            (
                _message(
                    sender,
                    recipient,
                    _clean(recipient),
                    subject,
                    "\n".join(plain),
                    page,
                    "rollup",
                    now,
                ),
                group,
            )
        )
    return out


def compose_rollups(
    rows: pd.DataFrame, sender: str, dashboard_url: str = "", now: datetime | None = None
) -> list[EmailMessage]:
    """One roll-up per department head and department of ``rollup_rows``' rows, grouped by app
    manager (most critical first)."""
    return [m for m, _ in rollup_messages(rows, sender, dashboard_url, now)]
