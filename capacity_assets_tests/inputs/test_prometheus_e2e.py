"""The Prometheus source end to end (issue 16): `capacity run` with CAPACITY_METRICS=prometheus+http://…
against a real VictoriaMetrics holding a year of node-exporter-shaped samples for three servers.

The daily values the pipeline stores (processed_data) must be the true daily means of the samples,
each on the UTC day its samples belong to; a second run must be served from the local cache (no
query reaches the server) and skip every batch as unchanged.
"""

import hashlib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from capacity_assets_tests.conftest import capacity
from capacity_assets_tests.victoria import VictoriaMetrics, node_exporter_samples

SERVERS = ["web-01:9100", "db-01:9100", "app-01:9100"]  # the `instance` label values = server ids
DAYS = 372
BATCHES = 2
RESOURCES = ("cpu", "memory", "disk", "network")
TODAY = datetime.now(timezone.utc).date()
LAST = TODAY - timedelta(
    days=4
)  # the samples stop a few days before yesterday (the last day synced)
START = LAST - timedelta(days=DAYS - 1)
HISTORY_DAYS = DAYS + 20  # the sync window (up to yesterday) covers every sample


def query_range_requests(vm: VictoriaMetrics) -> int:
    text = requests.get(f"{vm.url}/metrics", timeout=10).text
    m = re.search(r'^vm_http_requests_total\{path="/api/v1/query_range"\} (\d+)$', text, re.M)
    return int(m.group(1)) if m else 0


def cache_state(cache: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.glob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def sql(db: str, statement: str) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement)


@pytest.fixture(scope="module")
def prom_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus_e2e")
    samples = node_exporter_samples(SERVERS, START, DAYS, seed=21)
    pd.DataFrame(
        {
            "server_id": SERVERS,
            "department": ["Web", "Data", "Web"],
            "app_manager": ["Ann", "Bo", "Ann"],
        }
    ).to_csv(work / "owners.csv", index=False)
    with VictoriaMetrics() as vm:
        vm.import_prometheus(samples.text)
        env = {
            "CAPACITY_METRICS": vm.metrics_url,
            "CAPACITY_HIERARCHY": str(work / "owners.csv"),
            "CAPACITY_PROM_CACHE": str(work / "prom-cache"),
            "CAPACITY_PROM_HISTORY_DAYS": str(HISTORY_DAYS),
            "CAPACITY_DB": str(work / "cap.duckdb"),
            "CAPACITY_BATCHES": str(BATCHES),
            "DAGSTER_HOME": str(work / ".dagster"),
            "CAPACITY_PROMQL": "",
            "CAPACITY_DAILY_AGG": "",
            "CAPACITY_PROM_SERVER_LABEL": "",
            "CAPACITY_PROM_USER": "",
            "CAPACITY_PROM_PASSWORD": "",
            "CAPACITY_PROM_TOKEN": "",
        }
        asked_before = query_range_requests(vm)
        first = capacity("run", cwd=work, env=env)
        asked_first = query_range_requests(vm)
        processed = sql(env["CAPACITY_DB"], "select * from processed_data")
        ledger = sql(env["CAPACITY_DB"], "select batch, run_id from batch_ledger order by batch")
        cache_after_first = cache_state(work / "prom-cache")
        second = capacity("run", cwd=work, env=env)
        asked_second = query_range_requests(vm)
        yield {
            "work": work,
            "env": env,
            "expected": samples.expected,
            "first": first,
            "second": second,
            "processed": processed,
            "ledger": ledger,
            "cache_after_first": cache_after_first,
            "cache_after_second": cache_state(work / "prom-cache"),
            "ledger_after_second": sql(
                env["CAPACITY_DB"], "select batch, run_id from batch_ledger order by batch"
            ),
            "requests": (asked_before, asked_first, asked_second),
        }


def test_processed_data_holds_the_true_daily_mean_of_every_day(prom_runs):
    got = prom_runs["processed"].copy()
    got["ds"] = pd.to_datetime(got["ds"])
    want = prom_runs["expected"].rename(columns={"timestamp": "ds"})
    assert len(want) == len(SERVERS) * len(RESOURCES) * DAYS
    assert want["ds"].min() == pd.Timestamp(START) and want["ds"].max() == pd.Timestamp(LAST)
    merged = got.merge(want, on=["server_id", "resource", "ds"], how="outer", indicator=True)
    missing = merged[merged["_merge"] != "both"]
    assert missing.empty, (
        f"days present on one side only (a day shifted or lost?):\n{missing.head(10)}"
    )
    assert not merged["filled"].any(), "every day has samples: none may be gap-filled"
    for (server, resource), one in merged.groupby(["server_id", "resource"]):
        np.testing.assert_allclose(
            one["y"],
            one["mean"],
            rtol=1e-6,
            atol=1e-9,
            err_msg=f"{server}/{resource}: daily values differ",
        )
    # the /run tmpfs (97 % full) must not be what 'disk' reports
    assert merged.loc[merged["resource"] == "disk", "y"].max() < 90
    assert set(got["server_id"]) == set(SERVERS)


def test_every_server_is_forecast_with_its_owner(prom_runs):
    db = prom_runs["env"]["CAPACITY_DB"]
    forecast = sql(db, "select distinct server_id, resource from forecasts")
    assert len(forecast) == len(SERVERS) * len(RESOURCES)
    hierarchy = sql(db, "select server_id, department from business_hierarchy")
    assert set(hierarchy["server_id"]) == set(SERVERS)
    first_day = pd.to_datetime(sql(db, "select min(ds) d from forecasts")["d"][0])
    assert first_day == pd.Timestamp(LAST) + pd.Timedelta(
        days=1
    )  # day 1 follows the last day with samples


def test_the_first_run_fetches_the_window_up_to_yesterday(prom_runs):
    before, first, _ = prom_runs["requests"]
    assert first > before
    out = prom_runs["first"].stdout
    for resource in RESOURCES:
        assert f"{resource}: first fetch" in out, out
    manifest = (prom_runs["work"] / "prom-cache" / "manifest.json").read_text()
    # the window asked ends yesterday; the cache is complete up to the last day with samples, so the
    # days after it (no data yet: late, or an outage) are asked again next time
    assert f'"last_day": "{LAST}"' in manifest
    assert f'"first_day": "{TODAY - timedelta(days=HISTORY_DAYS)}"' in manifest
    for resource in RESOURCES:
        assert (
            f"{resource}: no data yet for every server for {LAST + timedelta(days=1)}..{TODAY - timedelta(days=1)}"
            in out
        ), out


def test_a_second_run_asks_only_for_the_days_without_data_and_skips_unchanged_batches(prom_runs):
    _, first, second = prom_runs["requests"]
    assert second - first == len(RESOURCES), (
        f"the second run sent {second - first} query_range request(s)"
    )
    out = prom_runs["second"].stdout
    for resource in RESOURCES:
        assert (
            f"{resource}: new days: fetched 3 day(s) ({LAST + timedelta(days=1)}..{TODAY - timedelta(days=1)})"
            in out
        ), out
    assert f"{BATCHES} batch(es) unchanged since they were last published" in out, out
    data = lambda state: {k: v for k, v in state.items() if k.endswith(".parquet")}  # noqa: E731
    assert data(prom_runs["cache_after_second"]) == data(prom_runs["cache_after_first"])
    assert len(data(prom_runs["cache_after_first"])) == len(RESOURCES)
    pd.testing.assert_frame_equal(prom_runs["ledger_after_second"], prom_runs["ledger"])
