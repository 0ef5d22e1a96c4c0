"""A first run on a real fleet (issue 24, item 5): virtual machines in a Prometheus-compatible server
(a real VictoriaMetrics) whose NICs report no ``node_network_speed_bytes``, and a CMDB-style hierarchy
whose ``app_manager`` column holds e-mail addresses and has no ``app_manager_email`` column.

Before, the first sync stopped on "no series at all" for network and the digests reached nobody.
Now `capacity run` forecasts cpu, memory and disk, says why network is missing and how to add or
drop it, and `capacity notify` mails the managers whose ``app_manager`` is an address (a real SMTP
server, aiosmtpd), naming the column the addresses came from.
"""

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from capacity_assets_tests.conftest import capacity
from capacity_assets_tests.notify.conftest import SENDER, MailServer
from capacity_assets_tests.victoria import VictoriaMetrics, node_exporter_samples

SERVERS = ["vm-01:9100", "vm-02:9100", "vm-03:9100"]
MANAGERS = ["Ann.Lee@Example.com", "bo@example.com", "Lena Fischer"]  # the last is a name
DAYS = 320  # just over the 10 months a series needs (4 backtest + 6 training)
LAST = datetime.now(timezone.utc).date() - timedelta(days=3)
START = LAST - timedelta(days=DAYS - 1)
NO_SPEED = "node_network_speed_bytes"
SOURCE = "app_manager (no app_manager_email column)"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("first_run")
    samples = node_exporter_samples(SERVERS, START, DAYS, seed=5)
    text = "\n".join(ln for ln in samples.text.splitlines() if not ln.startswith(NO_SPEED)) + "\n"
    pd.DataFrame(
        {"server_id": SERVERS, "department": ["Web", "Web", "Data"], "app_manager": MANAGERS}
    ).to_csv(work / "cmdb.csv", index=False)
    env = {
        "CAPACITY_METRICS": "",
        "CAPACITY_HIERARCHY": str(work / "cmdb.csv"),
        "CAPACITY_PROM_CACHE": str(work / "prom-cache"),
        "CAPACITY_PROM_HISTORY_DAYS": str(DAYS + 10),
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": "1",
        "CAPACITY_THRESHOLD": "40",  # low: every server has exceptions
        "DAGSTER_HOME": str(work / ".dagster"),
        "CAPACITY_PROMQL": "",
        "CAPACITY_DAILY_AGG": "",
        "CAPACITY_PROM_SERVER_LABEL": "",
        "CAPACITY_PROM_USER": "",
        "CAPACITY_PROM_PASSWORD": "",
        "CAPACITY_PROM_TOKEN": "",
    }
    with VictoriaMetrics() as vm:
        vm.import_prometheus(text)
        env["CAPACITY_METRICS"] = vm.metrics_url
        run = capacity("run", "--workers", "1", cwd=work, env=env, check=False)
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
            "CAPACITY_DASHBOARD_URL": "",
        }
        notify = capacity("notify", cwd=work, env=mail_env, check=False)
        delivered = server.messages()
    finally:
        server.stop()
    return {"work": work, "env": env, "run": run, "notify": notify, "delivered": delivered}


def sql(db: str, statement: str) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement)


def test_the_run_succeeds_without_network_and_says_how_to_add_or_drop_it(first_run):
    run = first_run["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    warning = next((ln for ln in out.splitlines() if "network left out" in ln), "")
    assert NO_SPEED in warning, out  # names the query that matched nothing
    assert "CAPACITY_PROMQL" in warning and "a file without network" in warning, warning
    forecast = sql(
        first_run["env"]["CAPACITY_DB"], "select distinct server_id, resource from forecasts"
    )
    assert set(forecast["resource"]) == {"cpu", "memory", "disk"}
    assert set(forecast["server_id"]) == set(SERVERS)
    assert not (first_run["work"] / "prom-cache" / "daily_network.parquet").exists()
    assert (
        "resources forecast: cpu (3 series), memory (3 series), disk (3 series); none of network"
        in out
    ), out


def test_the_summary_names_the_column_the_digest_addresses_come_from(first_run):
    risk = sql(first_run["env"]["CAPACITY_DB"], "select distinct app_manager from risk_exceptions")
    assert set(risk["app_manager"]) == set(MANAGERS), "every manager must have an exception"
    assert (
        f"digest addresses from {SOURCE}: 2 of 3 app managers at risk have one"
        in first_run["run"].stdout
    ), first_run["run"].stdout


def test_managers_whose_app_manager_is_an_address_get_their_digest(first_run):
    notify = first_run["notify"]
    assert notify.returncode == 0, notify.stdout + notify.stderr
    summary = json.loads(notify.stdout)
    assert summary["addresses_from"] == {"digest": SOURCE}
    assert f"digest addresses from {SOURCE}" in notify.stderr
    assert summary["recipients"] == ["ann.lee@example.com", "bo@example.com"]
    assert sorted(m["X-RcptTo"] for m in first_run["delivered"]) == summary["recipients"]
    ann = next(m for m in first_run["delivered"] if m["X-RcptTo"] == "ann.lee@example.com")
    assert "vm-01:9100" in ann.get_body(("plain",)).get_content()
    assert "vm-02:9100" not in ann.get_body(("plain",)).get_content()


def test_a_manager_whose_app_manager_is_a_name_is_reported_without_address(first_run):
    summary = json.loads(first_run["notify"].stdout)
    (lena,) = summary["without_address"]
    assert lena["app_manager"] == "Lena Fischer"
    assert (
        lena["reason"]
        == "'Lena Fischer' is not an address, and there is no app_manager_email column"
    )
    assert "app manager 'Lena Fischer' (Data) has" in first_run["notify"].stderr
