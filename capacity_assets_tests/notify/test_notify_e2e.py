"""Digests end to end (issue 16): a real `capacity run` whose hierarchy gives every app manager an
address, then `capacity notify` (the CLI), the Dagster job `capacity_notify` and the sensor
`digests_after_risk`, against a real SMTP server (aiosmtpd) on loopback.

One module fixture performs the sequence a user would (dry run, send, send again, the job, a dry run
after sending, a re-run of one batch, notify again) and records what each step left behind.
"""

import email
import json
import os
import re
import subprocess
import unicodedata
from email import policy
from pathlib import Path

import pandas as pd
import pytest

from capacity_assets_tests.conftest import BIN, capacity
from capacity_assets_tests.notify.conftest import SENDER, MailServer, ledger_rows

BATCHES = 2
THRESHOLD = 50.0  # low: several managers have exceptions
LINE = re.compile(r"^- (.+) / (cpu|memory|disk|network): ", re.M)


def address(manager: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", manager).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", ".", ascii_name.lower()).strip(".") + "@example.com"


def sql(db: str, statement: str) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement)


def listed(msg) -> set[tuple[str, str]]:
    """(server, resource) of every exception listed in a digest's plain-text part."""
    return set(LINE.findall(msg.get_body(("plain",)).get_content()))


def evaluate_sensor(home: Path, cursor: str | None):
    """``digests_after_risk`` evaluated on the instance `capacity run` recorded to; (result, new cursor)."""
    import dagster as dg

    from capacity_assets.pipeline.notify import digests_sensor

    digests_after_risk = digests_sensor(smtp_configured=True)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor)
        result = digests_after_risk(context)
        return result, context.cursor


def run_notify_job(work: Path, env: dict) -> subprocess.CompletedProcess:
    code = (
        "from dagster import DagsterInstance\nfrom capacity_assets.pipeline.definitions import defs\n"
        "r = defs().resolve_job_def('capacity_notify').execute_in_process(instance=DagsterInstance.get(), "
        "raise_on_error=False)\nprint('SUCCESS' if r.success else 'FAILED')"
    )
    return subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def notified(tmp_path_factory):
    from capacity_assets.demo.fleet import write_fleet

    work = tmp_path_factory.mktemp("notify_e2e")
    fleet = write_fleet(work / "fleet", servers=6, months=12, seed=0)
    hier = pd.read_csv(fleet["hierarchy"], dtype=str)
    hier["app_manager_email"] = hier["app_manager"].map(address)
    hier.to_csv(fleet["hierarchy"], index=False)
    env = {
        "CAPACITY_METRICS": fleet["metrics"],
        "CAPACITY_HIERARCHY": fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": str(BATCHES),
        "CAPACITY_THRESHOLD": str(THRESHOLD),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    # one worker: both batches in one process, one after the other
    capacity("run", "--workers", "1", cwd=work, env=env)
    db, home = env["CAPACITY_DB"], work / ".dagster"
    state = {
        "work": work,
        "env": env,
        "db": db,
        "hierarchy": hier,
        "risk": sql(db, "select * from risk_exceptions"),
    }
    state["sensor_fresh"] = evaluate_sensor(home, None)
    server = MailServer(work / "maildir")
    try:
        mail_env = {
            **env,
            "CAPACITY_SMTP_HOST": "127.0.0.1",
            "CAPACITY_SMTP_PORT": str(server.port),
            "CAPACITY_SMTP_FROM": SENDER,
            "CAPACITY_SMTP_USER": "",
            "CAPACITY_SMTP_PASSWORD": "",
            "CAPACITY_SMTP_STARTTLS": "false",
            "CAPACITY_SMTP_TIMEOUT": "10",
            "CAPACITY_DASHBOARD_URL": "",
        }
        state["mail_env"] = mail_env
        state["dry"] = capacity(
            "notify", "--dry-run", "--out", str(work / "eml"), cwd=work, env=mail_env
        )
        state["after_dry"] = {"ledger": ledger_rows(db), "delivered": len(server.messages())}
        state["first"] = capacity("notify", cwd=work, env=mail_env)
        state["messages"] = server.messages()
        state["ledger"] = ledger_rows(db)
        state["second"] = capacity("notify", cwd=work, env=mail_env)
        state["after_second"] = {"ledger": ledger_rows(db), "delivered": len(server.messages())}
        state["job"] = run_notify_job(work, mail_env)
        state["after_job"] = {"ledger": ledger_rows(db), "delivered": len(server.messages())}
        state["dry_again"] = capacity(
            "notify", "--dry-run", "--out", str(work / "eml-again"), cwd=work, env=mail_env
        )
        state["sensor_after"] = evaluate_sensor(home, state["sensor_fresh"][1])
        capacity("run", "--workers", "1", "--batch", "batch_00", "--force", cwd=work, env=env)
        state["sensor_rerun"] = evaluate_sensor(home, state["sensor_fresh"][1])
        state["risk_rerun"] = sql(db, "select * from risk_exceptions")
        state["third"] = capacity("notify", cwd=work, env=mail_env)
        state["after_third"] = {"ledger": ledger_rows(db), "delivered": len(server.messages())}
    finally:
        server.stop()
    yield state


def expected_per_recipient(risk: pd.DataFrame) -> dict[str, set[tuple[str, str]]]:
    want: dict[str, set] = {}
    for r in risk.itertuples():
        want.setdefault(r.app_manager_email, set()).add((r.server_id, r.resource))
    return want


def test_the_run_has_exceptions_for_several_addressed_managers(notified):
    risk = notified["risk"]
    assert len(risk) > 0 and risk["app_manager_email"].notna().all()
    assert risk["app_manager_email"].nunique() >= 2
    # a manager without exceptions exists too, and must get no mail
    assert set(notified["hierarchy"]["app_manager_email"]) - set(risk["app_manager_email"])


def test_one_digest_per_manager_with_exactly_their_rows(notified):
    want = expected_per_recipient(notified["risk"])
    msgs = notified["messages"]
    got = {m["X-RcptTo"]: m for m in msgs}
    assert len(msgs) == len(got) == len(want), [m["X-RcptTo"] for m in msgs]
    assert set(got) == set(want)
    managers = (
        notified["risk"]
        .drop_duplicates("app_manager_email")
        .set_index("app_manager_email")["app_manager"]
    )
    for recipient, msg in got.items():
        assert listed(msg) == want[recipient], recipient
        assert msg["X-Capacity-Kind"] == "digest" and msg["From"] == SENDER
        assert managers[recipient] in msg["Subject"] and managers[recipient] in str(msg["To"])
        n = len(want[recipient])
        assert f"{n} new exception" in msg["Subject"]
    summary = json.loads(notified["first"].stdout)
    assert summary["sent"] == len(want) and summary["rows"] == len(notified["risk"])
    assert summary["failures"] == [] and summary["without_address"] == []
    assert sorted(summary["recipients"]) == sorted(want)


def test_the_ledger_records_each_delivered_exception_once(notified):
    ledger, risk = notified["ledger"], notified["risk"]
    assert ledger is not None and len(ledger) == len(risk)
    assert set(zip(ledger["recipient"], ledger["server_id"], ledger["resource"])) == set(
        zip(risk["app_manager_email"], risk["server_id"], risk["resource"])
    )
    assert set(ledger["kind"]) == {"digest"}
    ids = {m["X-RcptTo"]: m["Message-ID"] for m in notified["messages"]}
    assert all(ids[r] == mid for r, mid in zip(ledger["recipient"], ledger["message_id"]))


def test_a_second_notify_sends_nothing(notified):
    summary = json.loads(notified["second"].stdout)
    assert summary["messages"] == 0 and summary["sent"] == 0
    assert notified["after_second"]["delivered"] == len(notified["messages"])
    pd.testing.assert_frame_equal(notified["after_second"]["ledger"], notified["ledger"])


def test_dry_run_writes_eml_files_and_records_nothing(notified):
    want = expected_per_recipient(notified["risk"])
    files = sorted((notified["work"] / "eml").glob("*.eml"))
    assert len(files) == len(want)
    for path in files:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        recipient = msg["To"].addresses[0].addr_spec
        assert listed(msg) == want[recipient], path.name
        assert recipient.replace("@", "") in path.name.replace("@", "")
    assert notified["after_dry"] == {"ledger": None, "delivered": 0}
    summary = json.loads(notified["dry"].stdout)
    assert (
        summary["dry_run"] is True and summary["sent"] == 0 and len(summary["files"]) == len(want)
    )
    # after the real send, a dry run has nothing left to write
    assert json.loads(notified["dry_again"].stdout)["messages"] == 0
    assert not list((notified["work"] / "eml-again").glob("*.eml"))


def test_the_dagster_job_succeeds_and_sends_nothing_new(notified):
    job = notified["job"]
    assert job.returncode == 0 and job.stdout.strip().endswith("SUCCESS"), (
        job.stdout + job.stderr[-3000:]
    )
    assert notified["after_job"]["delivered"] == len(notified["messages"])
    pd.testing.assert_frame_equal(notified["after_job"]["ledger"], notified["ledger"])


def test_the_sensor_asks_for_digests_once_per_new_risk_materialisation(notified):
    import dagster as dg

    fresh, cursor = notified["sensor_fresh"]
    assert isinstance(fresh, dg.RunRequest), fresh
    assert cursor is not None and fresh.run_key == f"digests-{cursor}"
    after, _ = notified["sensor_after"]
    assert isinstance(after, dg.SkipReason), after
    assert "no new risk_exceptions" in after.skip_message
    # a later run of one batch materialises risk_exceptions again: digests are due again
    rerun, new_cursor = notified["sensor_rerun"]
    assert isinstance(rerun, dg.RunRequest), rerun
    assert int(new_cursor) > int(cursor) and rerun.run_key == f"digests-{new_cursor}"


def test_re_running_a_batch_does_not_mail_the_same_exceptions_again(notified):
    risk, again = notified["risk"], notified["risk_rerun"]
    key = ["server_id", "resource", "severity", "first_breach_date"]
    assert set(map(tuple, again[key].itertuples(index=False))) == set(
        map(tuple, risk[key].itertuples(index=False))
    )
    summary = json.loads(notified["third"].stdout)
    assert summary["sent"] == 0
    assert notified["after_third"]["delivered"] == len(notified["messages"])
    pd.testing.assert_frame_equal(notified["after_third"]["ledger"], notified["ledger"])
