"""The pure rules: who is due what (new / worsened), recipients, subjects. No server, no database."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from capacity_assets.notify import digest
from capacity_assets_tests.notify.conftest import OMAR, PRIYA, SENDER, exc, fleet

SENT_AT = datetime(2025, 1, 6, 7, 0)


def frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["first_breach_date"] = pd.to_datetime(df["first_breach_date"])
    return df


def ledger_of(rows: pd.DataFrame, kind="digest", sent_at=SENT_AT) -> pd.DataFrame:
    """What the ledger would hold had ``rows`` (pending's output) been delivered."""
    return pd.DataFrame(
        {
            "recipient": rows["recipient"],
            "kind": kind,
            "risk_batch": rows["batch"],
            "server_id": rows["server_id"],
            "resource": rows["resource"],
            "severity": rows["severity"],
            "first_breach_date": rows["first_breach_date"],
            "sent_at": pd.Timestamp(sent_at),
            "message_id": "<m@x>",
        }
    )


def keys(df: pd.DataFrame) -> list[tuple]:
    return sorted(zip(df["recipient"], df["server_id"], df["resource"], df["change"]))


def test_everything_is_new_once_and_managers_without_address_are_left_out():
    due = digest.pending(frame(fleet()), None)
    assert keys(due) == [
        ("omar@example.com", "cache-01", "memory", "new"),
        ("priya.raman@example.com", '<b>srv "x" & y</b>', "memory", "new"),
        ("priya.raman@example.com", "db-01", "disk", "new"),
        ("priya.raman@example.com", "web-01", "cpu", "new"),
    ]
    # critical first within each recipient, then soonest
    priya = due[due["recipient"] == "priya.raman@example.com"]
    assert list(priya["server_id"]) == ["db-01", '<b>srv "x" & y</b>', "web-01"]
    assert digest.pending(frame(fleet()), ledger_of(due)).empty


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"severity": "critical"}, "critical"),  # warning -> critical
        ({"days": 40 - 7}, "earlier"),  # breach exactly 7 days earlier
        ({"days": 40 - 6}, None),  # 6 days earlier: noise
        ({"days": 40 + 20}, None),  # later: better, not resent
        ({"manager": OMAR}, "new"),  # new owner never saw it
        ({"severity": "critical", "days": 20}, "critical"),  # both: reported as now critical
    ],
)
def test_worsened_rule(change, expected):
    before = frame([exc("web-01", "cpu", "warning", 40, PRIYA)])
    sent = ledger_of(digest.pending(before, None))
    args = {"severity": "warning", "days": 40, "manager": PRIYA} | change
    now = frame([exc("web-01", "cpu", args["severity"], args["days"], args["manager"])])
    due = digest.pending(now, sent)
    assert list(due["change"]) == ([expected] if expected else [])
    if expected == "critical":
        assert list(due["previous_severity"]) == ["warning"]


def test_compared_with_the_last_mail_not_the_last_run():
    """Critical -> warning is not mailed, and warning -> critical again is not news: the manager's
    last mail already said critical. A breach drifting earlier by 4 days a week is mailed once the
    total reaches 7 days relative to what was last sent."""
    crit = frame([exc("db-01", "disk", "critical", 30, PRIYA)])
    sent = ledger_of(digest.pending(crit, None))
    calmer = frame([exc("db-01", "disk", "warning", 30, PRIYA)])
    assert digest.pending(calmer, sent).empty
    assert digest.pending(crit, sent).empty
    assert digest.pending(frame([exc("db-01", "disk", "critical", 26, PRIYA)]), sent).empty
    due = digest.pending(frame([exc("db-01", "disk", "critical", 22, PRIYA)]), sent)
    assert list(due["change"]) == ["earlier"]


def test_rollup_rows_do_not_count_as_digests():
    rows = frame([exc("web-01", "cpu", "warning", 40, PRIYA)])
    sent = ledger_of(digest.pending(rows, None), kind="rollup")
    assert list(digest.pending(rows, sent)["change"]) == ["new"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Priya.Raman@Example.com", "priya.raman@example.com"),
        ("  Priya Raman <priya@example.com> ", "priya@example.com"),
        ("mailto:omar@example.com", "omar@example.com"),
        ("ops@intranet", "ops@intranet"),
        ("a@example.com; b@example.com", None),
        ("priya at example.com", None),
        ("x@example.com\nBcc: evil@example.com", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_normalize_address(value, expected):
    assert digest.normalize_address(value) == expected


def test_unaddressed_names_owners_and_why():
    rows = fleet() + [exc("odd-01", "cpu", "critical", 3, ("Sam Lee", "sam at example.com"))]
    out = digest.unaddressed(frame(rows))
    assert out.to_dict("records") == [
        {
            "app_manager": "Lena Fischer",
            "department": "Search",
            "exceptions": 1,
            "critical": 0,
            "reason": "no address",
        },
        {
            "app_manager": "Sam Lee",
            "department": "Payments & Billing",
            "exceptions": 1,
            "critical": 1,
            "reason": "invalid address 'sam at example.com'",
        },
        {
            "app_manager": "Unassigned",
            "department": "Unassigned",
            "exceptions": 1,
            "critical": 0,
            "reason": "no address",
        },
    ]
    no_column = frame(fleet()).drop(columns="app_manager_email")
    assert digest.pending(no_column, None).empty
    assert set(digest.unaddressed(no_column)["reason"]) == {
        "risk_exceptions has no app_manager_email column (add it to the hierarchy file)"
    }


def test_email_column_matched_ignoring_case():
    df = frame(fleet()).rename(columns={"app_manager_email": "App_Manager_Email "})
    assert len(digest.pending(df, None)) == 4


def test_without_an_address_column_owner_values_that_are_addresses_are_used():
    """A CMDB export puts the manager's e-mail in app_manager (and the head's in department_head):
    without an *_email column those managers got no digest at all."""
    cmdb = [
        exc("web-01", "cpu", "warning", 40, ("Priya Raman <Priya@Example.com>", None)),
        exc("db-01", "disk", "critical", 10, ("omar@example.com", None), head="x"),
        exc("batch-09", "cpu", "warning", 60, ("Lena Fischer", None), department="Search"),
    ]
    risk = frame(cmdb).drop(columns=["app_manager_email", "department_head_email"])
    risk["department_head"] = ["cfo@example.com", "cfo@example.com", "Ines Roth"]
    due = digest.pending(risk, None)
    assert sorted(due["recipient"]) == ["omar@example.com", "priya@example.com"]
    assert digest.address_source(risk) == "app_manager (no app_manager_email column)"
    (lena,) = digest.unaddressed(risk).to_dict("records")
    assert lena["app_manager"] == "Lena Fischer"
    assert lena["reason"] == (
        "'Lena Fischer' is not an address, and there is no app_manager_email column"
    )
    assert digest.address_line(risk).endswith(": 2 of 3 app managers at risk have one")
    omar = next(m for m in digest.compose(due, SENDER) if "omar" in m["To"])
    assert str(omar["To"]) == "omar@example.com" and "Hello omar@example.com," in str(omar)
    rollup = digest.rollup_rows(risk, None)
    assert set(rollup["recipient"]) == {"cfo@example.com"} and len(rollup) == 2
    assert digest.address_source(risk, digest.HEAD_EMAIL_COLUMN) == (
        "department_head (no department_head_email column)"
    )
    # a real address column wins, even where it is empty
    risk["app_manager_email"] = [None, "o@example.com", None]
    assert list(digest.pending(risk, None)["recipient"]) == ["o@example.com"]
    assert digest.address_source(risk) == "app_manager_email"


def test_the_summary_says_plainly_when_no_owner_can_be_mailed():
    names = frame([exc("web-01", "cpu", "warning", 40, ("Lena Fischer", None))]).drop(
        columns=["app_manager_email", "department_head_email"]
    )
    assert digest.address_line(names) == (
        "digest addresses: none (no app_manager_email column, and no app_manager value is an "
        "address): 0 of 1 app managers at risk have one"
    )


def test_subjects_count_new_worsened_and_critical():
    before = frame(
        [exc("web-01", "cpu", "warning", 40, PRIYA), exc("db-01", "disk", "warning", 50, PRIYA)]
    )
    sent = ledger_of(digest.pending(before, None))
    now = frame(
        [
            exc("web-01", "cpu", "critical", 40, PRIYA),
            exc("db-01", "disk", "warning", 50, PRIYA),
            exc("app-02", "memory", "warning", 12, PRIYA),
        ]
    )
    [msg] = digest.compose(digest.pending(now, sent), SENDER)
    assert (
        msg["Subject"]
        == "Capacity risk: 1 new and 1 worsened exceptions (1 critical) for Priya Raman"
    )
    [msg] = digest.compose(
        digest.pending(frame([exc("app-02", "memory", "warning", 12, PRIYA)]), None), SENDER
    )
    assert msg["Subject"] == "Capacity risk: 1 new exception for Priya Raman"
    assert str(msg["To"]) == "Priya Raman <priya.raman@example.com>"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["Message-ID"].endswith("@example.com>")


def test_no_links_without_a_dashboard_url_and_names_cannot_inject_headers():
    rows = frame(
        [
            exc(
                "web-01",
                "cpu",
                "warning",
                40,
                ("Priya\r\nBcc: evil@example.com", "priya@example.com"),
            )
        ]
    )
    [msg] = digest.compose(digest.pending(rows, None), SENDER)
    assert "?server=" not in msg.get_body(("plain",)).get_content()
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "Priya Bcc: evil@example.com" in msg["Subject"]


def test_rollups_are_weekly_per_head():
    rows = frame(
        [
            exc("web-01", "cpu", "warning", 40, PRIYA, head="head@example.com"),
            exc(
                "cache-01",
                "memory",
                "critical",
                0,
                OMAR,
                department="Search",
                head="head@example.com",
            ),
        ]
    )
    due = digest.rollup_rows(rows, None)
    assert len(due) == 2
    msgs = digest.compose_rollups(due, SENDER)
    assert [m["Subject"] for m in msgs] == [
        "Capacity risk weekly roll-up for Payments & Billing: 1 exception",
        "Capacity risk weekly roll-up for Search: 1 exception (1 critical)",
    ]
    sent = ledger_of(due, kind="rollup")
    assert digest.rollup_rows(rows, sent, now=SENT_AT + timedelta(days=5)).empty
    assert len(digest.rollup_rows(rows, sent, now=SENT_AT + timedelta(days=6))) == 2
