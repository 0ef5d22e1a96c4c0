"""Alerts when a run fails, end to end: real failed runs of capacity_forecast in a real (SQLite)
Dagster instance, the registered run-failure sensor evaluated on it as the daemon has the code
server evaluate it (the stored cursor, the definitions' resources, the code location `capacity ui`
names), and the mail read back from a real SMTP server's Maildir (aiosmtpd).

The runs are started in-process, as `capacity run` starts them, so they carry no code location: the
sensor must still see them. Two cheap, real failures come after the sensor's first tick: a range
whose servers have no usable value (processed_data marks both batches failed, batch_ledger fails
naming them, nothing is fitted) and a run whose metrics path does not exist (processed_data fails).
"""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest

from capacity_assets import config
from capacity_assets.inputs.batching import batch_of
from capacity_assets_tests.notify.conftest import MailServer, free_port

BATCHES = 3  # capacity_assets_tests/conftest.py sets CAPACITY_BATCHES=3 for the session
UI = "http://dagster.example.com:3000"
SENSOR = "capacity_run_failure_alert"


def _servers() -> dict[str, str]:
    """Two servers in batch_00, one in batch_01, one in batch_02 (stable md5 batching)."""
    wanted = {"batch_00": 2, "batch_01": 1, "batch_02": 1}
    out: dict[str, str] = {}
    for i in range(200):
        s = f"srv-{i:03d}"
        b = batch_of(s, BATCHES)
        if wanted.get(b, 0):
            wanted[b] -= 1
            out[s] = b
    assert not any(wanted.values())
    return out


def _defs(base: dict[str, str], smtp, **settings):
    from capacity_assets.pipeline.definitions import build_defs

    cfg = dataclasses.replace(config.load(base), **settings)
    return build_defs(cfg, smtp, {})


def _tick(defs, instance, cursor):
    """One tick of the alert sensor as the daemon asks the code server for it (the function the
    code server runs, with the stored cursor and the definitions' resources), in the code location
    `capacity ui` names; returns (SensorExecutionData, sensor definition)."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._grpc.impl import get_external_sensor_execution

    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="capacity_assets.pipeline.definitions"),
        location_name="capacity_assets",
    )
    data = get_external_sensor_execution(
        defs.get_repository_def(),
        location,
        instance.get_ref(),
        SENSOR,
        None,
        None,
        cursor,
        None,
        None,
    )
    assert not hasattr(data, "error") or data.error is None, data
    return data, defs.resolve_sensor_def(SENSOR)


@pytest.fixture(scope="module")
def failed_runs(tmp_path_factory):
    """A persistent instance holding two failed capacity_forecast runs, and the sensor cursor of
    the tick made before they failed."""
    work = tmp_path_factory.mktemp("alert")
    servers = _servers()
    metrics = work / "metrics.csv"
    lines = ["server_id,resource,timestamp,utilization_pct"]
    for s, b in servers.items():
        value = "42.5" if b == "batch_02" else "n/a"  # batch_00 and batch_01: nothing usable
        lines += [f"{s},cpu,2025-01-{d:02d}T12:00:00,{value}" for d in range(1, 11)]
    metrics.write_text("\n".join(lines) + "\n")
    hierarchy = work / "hierarchy.csv"
    hierarchy.write_text(
        "server_id,department,app_manager\n" + "".join(f"{s},Payments,Priya\n" for s in servers)
    )
    base = {
        "CAPACITY_METRICS": str(metrics),
        "CAPACITY_HIERARCHY": str(hierarchy),
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": str(BATCHES),
    }
    home = work / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(str(home))
    # the sensor was running before the runs failed: its first tick sets the cursor
    quiet = _defs(base, config.smtp_settings({}))
    data, _ = _tick(quiet, instance, None)
    cursor = data.cursor
    assert cursor and not data.dagster_run_reactions

    from capacity_assets.pipeline.jobs import range_tags

    hier = quiet.resolve_job_def("capacity_hierarchy").execute_in_process(instance=instance)
    assert hier.success
    forecast = quiet.resolve_job_def("capacity_forecast")
    batches = forecast.execute_in_process(
        instance=instance, raise_on_error=False, tags=range_tags("batch_00", "batch_01")
    )
    missing = _defs(
        {**base, "CAPACITY_METRICS": str(work / "no-such-folder")}, config.smtp_settings({})
    )
    crashed = missing.resolve_job_def("capacity_forecast").execute_in_process(
        instance=instance, raise_on_error=False, tags=range_tags("batch_02", "batch_02")
    )
    assert not batches.success and not crashed.success
    yield {
        "base": base,
        "instance": instance,
        "cursor": cursor,
        "batches": batches.run_id,
        "crashed": crashed.run_id,
        "missing": str(work / "no-such-folder"),
    }
    instance.dispose()


def _by_run(messages) -> dict[str, object]:
    return {m["X-Capacity-Run-Id"]: m for m in messages}


def test_a_failed_run_is_mailed_to_every_address_with_batches_steps_error_and_link(
    failed_runs, tmp_path
):
    server = MailServer(tmp_path / "maildir")
    try:
        defs = _defs(
            failed_runs["base"],
            server.settings(),
            alert_email="oncall@example.com, sre-lead@example.org",
            dagster_url=UI + "/",
        )
        data, sensor = _tick(defs, failed_runs["instance"], failed_runs["cursor"])
        mails = _by_run(server.messages())
    finally:
        server.stop()
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert [r.error for r in data.dagster_run_reactions] == [None, None]
    assert set(mails) == {failed_runs["batches"], failed_runs["crashed"]}

    run_id = failed_runs["batches"]
    mail = mails[run_id]
    # one message, delivered to both addresses (aiosmtpd records the envelope's recipients)
    assert sorted(a.strip() for a in mail["X-RcptTo"].split(",")) == [
        "oncall@example.com",
        "sre-lead@example.org",
    ]
    # a long header is folded: ``Subject:`` then the value on the next line, as RFC 5322 allows
    assert (
        mail["Subject"].strip()
        == "capacity_assets: capacity_forecast run failed (batches batch_00..batch_01)"
    )
    text = mail.get_content()
    assert f"The Dagster run {run_id} of the job capacity_forecast failed." in text
    assert "Batches not published: batch_00..batch_01" in text
    assert "Failed steps: batch_ledger" in text
    first_error = next(line for line in text.splitlines() if line.startswith("First error: "))
    assert "2 of 2 batches failed and were not published" in first_error
    assert "batch_00: processed_data" in first_error and "batch_01: processed_data" in first_error
    assert f"The run's page: {UI}/runs/{run_id}\n" in text  # one slash, as the UI routes runs
    assert "Published all the same" not in text  # neither batch of the run was
    assert (
        "re-running those batches is enough: capacity run --batch batch_00 --batch batch_01" in text
    )

    crashed = mails[failed_runs["crashed"]]
    assert (
        crashed["Subject"].strip()
        == "capacity_assets: capacity_forecast run failed (batch batch_02)"
    )
    text = crashed.get_content()
    assert "Failed steps: processed_data" in text
    first_error = next(line for line in text.splitlines() if line.startswith("First error: "))
    assert failed_runs["missing"] in first_error
    assert "Traceback" not in text and "DagsterExecutionStepExecutionError" not in text


def test_without_alert_addresses_or_smtp_the_sensor_is_off_and_mails_nothing(failed_runs, tmp_path):
    server = MailServer(tmp_path / "maildir")
    try:
        unset = _defs(failed_runs["base"], server.settings())  # no CAPACITY_ALERT_EMAIL
        data, sensor = _tick(unset, failed_runs["instance"], failed_runs["cursor"])
        delivered = server.messages()
    finally:
        server.stop()
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert delivered == [] and not data.dagster_run_reactions
    assert "set CAPACITY_ALERT_EMAIL" in data.skip_message
    # addresses but no SMTP server: off by default too
    no_smtp = _defs(failed_runs["base"], config.smtp_settings({}), alert_email="oncall@example.com")
    assert no_smtp.resolve_sensor_def(SENSOR).default_status == dg.DefaultSensorStatus.STOPPED


def test_an_alert_that_cannot_be_sent_fails_the_tick_naming_the_smtp_server(failed_runs):
    port = free_port()  # nobody listens there
    defs = _defs(
        failed_runs["base"],
        config.smtp_settings({"CAPACITY_SMTP_HOST": "127.0.0.1", "CAPACITY_SMTP_PORT": str(port)}),
        alert_email="oncall@example.com",
    )
    data, _ = _tick(defs, failed_runs["instance"], failed_runs["cursor"])
    errors = [r.error for r in data.dagster_run_reactions]
    assert errors and all(e is not None for e in errors)
    text = errors[0].to_string()
    assert f"cannot connect to SMTP server 127.0.0.1:{port}" in text
    assert "was not sent" in text


def test_the_mail_writes_batches_as_ranges_and_the_error_as_one_short_line():
    """A run whose failure names some of its batches: ranges in the subject, the rest listed as
    published, one line of error however long the message, the link without a double slash."""
    from capacity_assets.notify import alert

    failure = alert.RunFailure(
        job="capacity_forecast",
        run_id="r-1",
        batches=("batch_07", "batch_01", "batch_02", "batch_03"),
        published=("batch_04", "batch_05"),
        steps=("batch_ledger",),
        error=alert.first_line("\n  ValueError: " + "x" * 900 + "\nTraceback (most recent call"),
        url=alert.run_url("http://dagster:3000/", "r-1"),
    )
    msg = alert.compose(failure, ["oncall@example.com"], "capacity@example.com")
    assert msg["Subject"] == (
        "capacity_assets: capacity_forecast run failed (batches batch_01..batch_03, batch_07)"
    )
    text = msg.get_content()
    assert "Published all the same: batch_04..batch_05" in text
    error = next(line for line in text.splitlines() if line.startswith("First error: "))
    assert error.startswith("First error: ValueError: xxx") and len(error) <= 13 + 500
    assert "Traceback" not in text
    assert "The run's page: http://dagster:3000/runs/r-1\n" in text
    assert (
        "capacity run --batch batch_01 --batch batch_02 --batch batch_03 --batch batch_07" in text
    )
