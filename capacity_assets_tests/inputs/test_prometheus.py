"""The Prometheus source against a real VictoriaMetrics: daily values, day labels, the cache, and errors.

No mocks: every request goes over HTTP to a real server holding a year of node-exporter-shaped
samples whose true daily values are computed from the same numbers in Python.
"""

import glob
import json
import socket
import time
from datetime import date, timedelta
from urllib.parse import parse_qs

import duckdb
import numpy as np
import pandas as pd
import pytest
import requests

from capacity_assets.config import PROM_CREDENTIALS, CapacitySettings, prometheus_credentials
from capacity_assets.inputs import files
from capacity_assets.inputs import prometheus as prom
from capacity_assets.inputs.prometheus.fetch import _epoch
from capacity_assets.inputs.sources import prepare_metrics
from capacity_assets_tests import victoria
from capacity_assets_tests.victoria import VictoriaMetrics, node_exporter_samples

SERVERS = ["web-01:9100", "db-01:9100", "batch-01:9100"]
START, DAYS = date(2024, 1, 1), 370  # 2024-01-01 .. 2025-01-04
LAST = START + timedelta(days=DAYS - 1)
SPIKE_DAY = date(2024, 3, 10)
KEY = ["server_id", "resource", "timestamp"]


@pytest.fixture(autouse=True)
def no_credentials_from_outside(monkeypatch):
    for name in (prom.ENV_USER, prom.ENV_PASSWORD, prom.ENV_TOKEN):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def fleet():
    """One server with a year of 5-minute samples for three servers, plus a series with one odd day."""
    samples = node_exporter_samples(SERVERS, START, DAYS, seed=11)
    with VictoriaMetrics() as vm:
        vm.import_prometheus(samples.text + _spike_text())
        yield vm, samples.expected


def _spike_text() -> str:
    """'spike_ratio' is 0.5 every 5 minutes for ten days, and 0.9 on SPIKE_DAY (00:02:30 to 23:57:30)."""
    t0 = pd.Timestamp(SPIKE_DAY - timedelta(days=5)).value // 10**9
    lines = []
    for k in range(10 * 288):
        t = t0 + 150 + 300 * k
        value = 0.9 if pd.Timestamp(t, unit="s").date() == SPIKE_DAY else 0.5
        lines.append(f'spike_ratio{{instance="spiky"}} {value} {t * 1000}')
    return "\n".join(lines) + "\n"


class Recorder:
    """A real requests.Session that notes every query_range it sends (query, first and last day asked)."""

    def __init__(self):
        self.session = requests.Session()
        self.calls = []
        self.session.hooks["response"].append(self._note)

    def _note(self, response, *args, **kwargs):
        form = parse_qs(response.request.body)
        start, end = int(form["start"][0]), int(form["end"][0])
        # the point at D 00:00 is day D-1: turn the asked points back into the days they cover
        day = lambda t: (date(1970, 1, 1) + timedelta(days=t // 86400 - 1)).isoformat()  # noqa: E731
        self.calls.append(
            {
                "query": form["query"][0],
                "first": day(start),
                "last": day(end),
                "points": (end - start) // 86400 + 1,
            }
        )

    def days_asked(self, needle: str = "") -> list[tuple[str, str]]:
        return [(c["first"], c["last"]) for c in self.calls if needle in c["query"]]


def _compare(got: pd.DataFrame, expected: pd.DataFrame, column: str, rtol=1e-6):
    merged = got.merge(expected, on=KEY, how="outer", indicator=True)
    missing = merged[merged["_merge"] != "both"]
    assert missing.empty, f"days differ between server and truth:\n{missing.head(10)}"
    np.testing.assert_allclose(merged["utilization_pct"], merged[column], rtol=rtol)


# ------------------------------------------------------------------------------------- daily values


def test_daily_means_equal_the_samples_of_each_day(fleet):
    vm, expected = fleet
    queries = prom.load_queries(None)
    # ask for a week more on each side: days without samples must not appear, and none may shift
    got = prom.fetch_daily(
        vm.metrics_url, queries, START - timedelta(days=7), LAST + timedelta(days=7)
    )
    assert list(got.columns) == ["server_id", "resource", "timestamp", "utilization_pct"]
    assert str(got["timestamp"].dtype) == "datetime64[ns]"
    assert (got["timestamp"] == got["timestamp"].dt.normalize()).all()  # UTC midnight, naive
    assert got["timestamp"].min() == pd.Timestamp(START) and got["timestamp"].max() == pd.Timestamp(
        LAST
    )
    assert len(got) == len(SERVERS) * 4 * DAYS
    _compare(got, expected, "mean")
    assert got["utilization_pct"].between(0, 100).all()


def test_each_day_is_labelled_with_the_day_its_samples_belong_to(fleet):
    vm, _ = fleet
    for expr in ("spike_ratio", "spike_ratio * 1"):  # raw-sample window, and the 5-minute subquery
        week = (SPIKE_DAY - timedelta(days=3), SPIKE_DAY + timedelta(days=3))
        got = prom.fetch_daily(vm.metrics_url, {"cpu": expr}, *week)
        by_day = dict(zip(got["timestamp"].dt.date, got["utilization_pct"].round(9)))
        assert by_day == {
            SPIKE_DAY + timedelta(days=d): (90.0 if d == 0 else 50.0) for d in range(-3, 4)
        }, expr


@pytest.mark.parametrize("agg", ["max", "p95"])
def test_max_and_p95_are_the_daily_max_and_95th_percentile(fleet, agg):
    vm, expected = fleet
    got = prom.fetch_daily(vm.metrics_url, prom.load_queries(None), START, LAST, agg=agg)
    _compare(got, expected, agg)
    both = got.merge(expected, on=KEY)
    assert (both["mean"] <= both["utilization_pct"] + 1e-9).all()
    assert (both["utilization_pct"] <= both["max"] + 1e-9).all()


def test_disk_is_the_fullest_real_filesystem_and_ignores_tmpfs(fleet):
    vm, expected = fleet
    queries = prom.load_queries(None)
    got = prom.fetch_daily(
        vm.metrics_url, {"disk": queries["disk"]}, START, START + timedelta(days=30)
    )
    # the /run tmpfs is 97 % full: had it been counted, every day would read about 97 %
    assert got["utilization_pct"].max() < 90
    month = expected[
        (expected["resource"] == "disk")
        & (expected["timestamp"] <= pd.Timestamp(START + timedelta(days=30)))
    ]
    _compare(got, month, "mean")
    naive = "max by (instance) (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)"
    with_tmpfs = prom.fetch_daily(
        vm.metrics_url, {"disk": naive}, START, START + timedelta(days=30)
    )
    assert with_tmpfs["utilization_pct"].min() > 96.5


def test_small_max_points_splits_requests_and_gives_identical_values(fleet):
    vm, _ = fleet
    queries = prom.load_queries(None)
    whole = Recorder()
    reference = prom.fetch_daily(vm.metrics_url, queries, START, LAST, session=whole.session)
    assert len(whole.calls) == 2 + 2 * -(
        -DAYS // (11000 // 288)
    )  # cpu, memory whole; disk, network 38-day chunks
    split = Recorder()
    got = pd.concat(
        [
            prom.fetch_daily(
                vm.metrics_url,
                {k: queries[k] for k in ("cpu", "memory")},
                START,
                LAST,
                max_points=40,
                session=split.session,
            ),
            prom.fetch_daily(
                vm.metrics_url,
                {k: queries[k] for k in ("disk", "network")},
                START,
                LAST,
                max_points=7 * 288,
                session=split.session,
            ),
        ]
    )
    plain = [c for c in split.calls if "[1d]" in c["query"]]
    sub = [c for c in split.calls if "[1d:5m]" in c["query"]]
    assert len(plain) == 2 * -(-DAYS // 40) and max(c["points"] for c in plain) == 40
    assert len(sub) == 2 * -(-DAYS // 7) and max(c["points"] for c in sub) * 288 <= 7 * 288
    days = sorted({(c["first"], c["last"]) for c in sub})  # consecutive, no gap, no overlap
    assert days[0][0] == START.isoformat() and days[-1][1] == LAST.isoformat()
    assert all(
        date.fromisoformat(b[0]) == date.fromisoformat(a[1]) + timedelta(days=1)
        for a, b in zip(days, days[1:])
    )
    got = got.sort_values(["resource", "server_id", "timestamp"], ignore_index=True)
    pd.testing.assert_frame_equal(got, reference, check_exact=False, rtol=1e-12)


def test_scale_is_detected_unless_the_query_file_declares_it(fleet, tmp_path):
    vm, expected = fleet
    span = (START, START + timedelta(days=9))
    cpu = expected[
        (expected["resource"] == "cpu") & (expected["timestamp"] <= pd.Timestamp(span[1]))
    ]
    ratio = prom.fetch_daily(
        vm.metrics_url, {"cpu": victoria.CPU}, *span
    )  # values 0–1, no scale: ×100
    percent = prom.fetch_daily(
        vm.metrics_url, {"cpu": f"{victoria.CPU} * 100"}, *span
    )  # already percent: kept
    _compare(ratio, cpu, "mean")
    _compare(percent, cpu, "mean")
    path = tmp_path / "q.yaml"
    path.write_text(f"cpu:\n  expr: {victoria.CPU}\n  scale: 1\n")
    declared = prom.fetch_daily(vm.metrics_url, prom.load_queries(str(path)), *span)
    np.testing.assert_allclose(
        declared["utilization_pct"] * 100, ratio["utilization_pct"], rtol=1e-12
    )


# ------------------------------------------------------------------------------------------ the cache


def _split_text(text: str, cutoff: date) -> tuple[str, str]:
    """The import lines before and from midnight of ``cutoff``."""
    edge = pd.Timestamp(cutoff).value // 10**6
    before, after = [], []
    for line in text.splitlines():
        (before if int(line.rsplit(" ", 1)[1]) < edge else after).append(line)
    return "\n".join(before) + "\n", "\n".join(after) + "\n"


def _read_cache(pattern: str) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted(glob.glob(pattern))]
    return pd.concat(frames).sort_values(KEY, ignore_index=True)


def test_sync_fetches_only_the_days_the_cache_lacks(tmp_path):
    start, first_part, days = date(2024, 5, 1), 30, 40
    samples = node_exporter_samples(["a", "b"], start, days, seed=5)
    cutoff = start + timedelta(days=first_part)
    old, new = _split_text(samples.text, cutoff)
    queries = prom.load_queries(None)
    lines = []
    with VictoriaMetrics() as vm:
        vm.import_prometheus(old)
        first = Recorder()
        pattern = prom.sync(
            vm.metrics_url,
            tmp_path,
            cutoff - timedelta(days=1),
            90,
            queries,
            log=lines.append,
            session=first.session,
        )
        cache = _read_cache(pattern)
        assert len(cache) == 2 * 4 * first_part
        asked = first.days_asked()
        assert min(a for a, _ in asked) == (cutoff - timedelta(days=90)).isoformat()
        assert max(b for _, b in asked) == (cutoff - timedelta(days=1)).isoformat()

        again = Recorder()
        prom.sync(
            vm.metrics_url,
            tmp_path,
            cutoff - timedelta(days=1),
            90,
            queries,
            log=lines.append,
            session=again.session,
        )
        assert again.calls == [] and sum("cache up to date" in line for line in lines) == 4

        vm.import_prometheus(new)
        second = Recorder()
        last = start + timedelta(days=days - 1)
        prom.sync(
            vm.metrics_url, tmp_path, last, 90, queries, log=lines.append, session=second.session
        )
        assert (
            len(second.calls) == 4
        )  # one per resource: 10 days fit in one request even for subqueries
        assert set(second.days_asked()) == {(cutoff.isoformat(), last.isoformat())}
        assert sum("fetched 10 day(s)" in line for line in lines) == 4
        after = _read_cache(pattern)
        assert len(after) == 2 * 4 * days
        # the days kept are untouched, and the new ones are exactly the server's values
        pd.testing.assert_frame_equal(
            after[after["timestamp"] < pd.Timestamp(cutoff)].reset_index(drop=True), cache
        )
        fresh = prom.fetch_daily(vm.metrics_url, queries, start, last)
        pd.testing.assert_frame_equal(
            after, fresh.sort_values(KEY, ignore_index=True), check_exact=False, rtol=1e-12
        )
        _compare(after, samples.expected, "mean")


def test_sync_window_slides_and_a_changed_query_agg_or_url_is_fetched_again(tmp_path):
    start = date(2024, 5, 1)
    samples = node_exporter_samples(["a", "b"], start, 20, seed=6)
    queries = prom.load_queries(None)
    last = start + timedelta(days=19)
    lines = []
    with VictoriaMetrics() as vm:
        vm.import_prometheus(samples.text)
        pattern = prom.sync(
            vm.metrics_url, tmp_path, last - timedelta(days=1), 10, queries, log=lines.append
        )
        before = _read_cache(pattern)

        slide = Recorder()  # one day later: one new day asked, the oldest day dropped
        prom.sync(
            vm.metrics_url, tmp_path, last, 10, queries, log=lines.append, session=slide.session
        )
        assert set(slide.days_asked()) == {(last.isoformat(), last.isoformat())}
        assert _read_cache(pattern)["timestamp"].min() == pd.Timestamp(last - timedelta(days=9))

        halved = prom.Queries(queries, queries.scales)
        halved["cpu"] = f"{victoria.CPU} / 2"
        changed = Recorder()
        prom.sync(
            vm.metrics_url, tmp_path, last, 10, halved, log=lines.append, session=changed.session
        )
        assert changed.days_asked() == [((last - timedelta(days=9)).isoformat(), last.isoformat())]
        assert any(line.startswith("cpu: query settings changed") for line in lines)
        assert sum("cache up to date" in line for line in lines[-3:]) == 3
        now = _read_cache(pattern)
        cpu_now = now[now["resource"] == "cpu"].set_index(["server_id", "timestamp"])[
            "utilization_pct"
        ]
        cpu_before = before[before["resource"] == "cpu"].set_index(["server_id", "timestamp"])[
            "utilization_pct"
        ]
        shared = cpu_now.index.intersection(cpu_before.index)
        assert len(shared) == 2 * 9
        np.testing.assert_allclose(cpu_now[shared] * 2, cpu_before[shared], rtol=1e-9)

        by_max = Recorder()
        prom.sync(vm.metrics_url, tmp_path, last, 10, halved, agg="max", session=by_max.session)
        assert len(by_max.calls) >= 4 and all("max_over_time" in c["query"] for c in by_max.calls)

        other_url = Recorder()
        prom.sync(
            f"prometheus+http://localhost:{vm.port}/",
            tmp_path,
            last,
            10,
            halved,
            agg="max",
            session=other_url.session,
        )
        assert len({c["query"] for c in other_url.calls}) == 4

        only_cpu = prom.Queries({"cpu": halved["cpu"]}, {"cpu": 100})
        prom.sync(vm.metrics_url, tmp_path, last, 10, only_cpu, log=lines.append)
        assert set(_read_cache(pattern)["resource"]) == {"cpu"}
        assert any("memory: no longer queried" in line for line in lines)

        shorter = Recorder()  # a shorter window only drops days: nothing to ask
        prom.sync(vm.metrics_url, tmp_path, last, 5, only_cpu, session=shorter.session)
        assert shorter.calls == []
        assert sorted(_read_cache(pattern)["timestamp"].unique()) == list(
            pd.date_range(last - timedelta(days=4), last)
        )


def test_cache_is_what_the_file_ingest_reads(fleet, tmp_path):
    vm, expected = fleet
    pattern = prom.sync(vm.metrics_url, tmp_path / "cache", LAST, DAYS, prom.load_queries(None))
    conn = duckdb.connect()
    sources = files.inspect_metrics(conn, pattern)
    assert sorted(s.path for s in sources) == sorted(
        str(tmp_path / "cache" / f"daily_{r}.parquet") for r in ("cpu", "memory", "disk", "network")
    )
    assert all(s.scale == 1 for s in sources)  # already percent: the ingest must not scale again
    daily, stats = files.read_daily(conn, sources, SERVERS)
    assert stats.unknown_resource == stats.bad_timestamp == stats.duplicates == stats.clipped == 0
    got = daily.rename(columns={"ds": "timestamp", "y": "utilization_pct"})
    _compare(got, expected, "mean")


def test_a_failed_sync_leaves_only_whole_files(fleet, tmp_path):
    vm, _ = fleet
    queries = prom.load_queries(None)
    broken = prom.Queries(
        {"cpu": queries["cpu"], "memory": "sum(rate(broken[5m]"}, {"cpu": 100, "memory": 100}
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".daily_cpu.parquet.4242.tmp").write_bytes(b"PAR1 half a file from a killed sync")
    with pytest.raises(prom.PrometheusError, match="memory query"):
        prom.sync(vm.metrics_url, cache, START + timedelta(days=9), 10, broken)
    assert sorted(p.name for p in cache.iterdir()) == [
        ".sync.lock",
        "daily_cpu.parquet",
        "manifest.json",
    ]
    assert len(pd.read_parquet(cache / "daily_cpu.parquet")) == 10 * len(SERVERS)
    assert list(json.loads((cache / "manifest.json").read_text())["resources"]) == ["cpu"]
    lines = []
    prom.sync(vm.metrics_url, cache, START + timedelta(days=9), 10, queries, log=lines.append)
    assert (
        sum("cache up to date" in line for line in lines) == 1
        and sum("first fetch" in line for line in lines) == 3
    )


def test_sync_refuses_a_day_that_is_not_over(fleet, tmp_path):
    vm, _ = fleet
    today = pd.Timestamp.now(tz="UTC").date()
    assert prom.last_complete_day() == today - timedelta(days=1)
    with pytest.raises(ValueError, match="not a complete day"):
        prom.sync(vm.metrics_url, tmp_path, today, 10, prom.load_queries(None))
    assert not list(tmp_path.iterdir())  # refused before touching anything


# ------------------------------------------------------------------------------------------- errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_quick_clear_error():
    port = _closed_port()
    began = time.monotonic()
    with pytest.raises(prom.PrometheusError) as e:
        prom.fetch_daily(
            f"prometheus+http://127.0.0.1:{port}",
            {"cpu": victoria.CPU},
            START,
            LAST,
            timeout=2,
            retries=1,
        )
    assert time.monotonic() - began < 5
    text = str(e.value)
    assert f"http://127.0.0.1:{port}" in text and "cannot connect" in text and "2 attempts" in text
    assert f"cpu query: avg_over_time({victoria.CPU}[1d])" in text


def test_bad_promql_shows_the_servers_error(fleet):
    vm, _ = fleet
    bad = "sum(rate(node_cpu_seconds_total[5m]"
    with pytest.raises(prom.PrometheusError) as e:
        prom.fetch_daily(vm.metrics_url, {"cpu": bad}, START, START + timedelta(days=3))
    server_says = requests.post(
        f"{vm.url}/api/v1/query_range",
        data={
            "query": prom.daily_query(bad),
            "start": _epoch(START) + 86400,
            "end": _epoch(START + timedelta(days=3)) + 86400,
            "step": 86400,
        },
    ).json()["error"]
    text = str(e.value)
    assert " ".join(server_says.split()) in text
    assert vm.url in text and "cpu query:" in text and bad in text


def test_a_query_that_matches_nothing_is_an_error(fleet):
    vm, _ = fleet
    with pytest.raises(
        prom.NoSeriesError,
        match=r"no series at all for 2024-01-01\.\.2024-01-10.*memory query: "
        r"avg_over_time\(node_memory_typo\[1d\]\)",
    ):
        prom.fetch_daily(
            vm.metrics_url, {"memory": "node_memory_typo"}, START, START + timedelta(days=9)
        )


def test_series_without_the_server_label_or_twice_per_server_are_refused(fleet):
    vm, _ = fleet
    with pytest.raises(prom.PrometheusError, match="has no 'instance' label"):
        prom.fetch_daily(
            vm.metrics_url, {"cpu": f"avg({victoria.CPU})"}, START, START + timedelta(days=2)
        )
    with pytest.raises(
        prom.PrometheusError,
        match="two series have instance='web-01:9100'|two series have instance=",
    ):
        prom.fetch_daily(
            vm.metrics_url,
            {"disk": "node_filesystem_avail_bytes"},
            START,
            START + timedelta(days=2),
        )


@pytest.fixture(scope="module")
def guarded():
    """A server behind basic auth, with two weeks of data."""
    with VictoriaMetrics(username="capacity", password="Right-Pa55word") as vm:
        vm.import_prometheus(node_exporter_samples(["a"], START, 14, seed=2).text)
        yield vm


def test_basic_auth_from_the_environment(guarded, monkeypatch, tmp_path):
    monkeypatch.setenv(prom.ENV_USER, "capacity")
    monkeypatch.setenv(prom.ENV_PASSWORD, "Right-Pa55word")
    got = prom.fetch_daily(
        guarded.metrics_url,
        {"cpu": victoria.CPU},
        START,
        START + timedelta(days=13),
        credentials=prometheus_credentials(),
    )
    assert len(got) == 14
    lines = []
    pattern = prom.sync(
        guarded.metrics_url,
        tmp_path,
        START + timedelta(days=13),
        14,
        prom.load_queries(None),
        log=lines.append,
        credentials=prometheus_credentials(),
    )
    assert len(_read_cache(pattern)) == 4 * 14
    written = "\n".join(lines) + (tmp_path / "manifest.json").read_text()
    assert "Right-Pa55word" not in written and "capacity@" not in written


def test_wrong_or_missing_credentials_are_a_clear_401_that_reveals_nothing(guarded, monkeypatch):
    secrets = ["Right-Pa55word", "Wrong-Pa55word", "tok-3141592653"]
    monkeypatch.setenv(prom.ENV_USER, "capacity")
    monkeypatch.setenv(prom.ENV_PASSWORD, "Wrong-Pa55word")
    with pytest.raises(prom.PrometheusError) as wrong:
        prom.fetch_daily(
            guarded.metrics_url,
            {"cpu": victoria.CPU},
            START,
            START + timedelta(days=2),
            credentials=prometheus_credentials(),
        )
    assert "HTTP 401" in str(
        wrong.value
    ) and "refused the credentials from CAPACITY_PROM_USER" in str(wrong.value)
    monkeypatch.delenv(prom.ENV_USER)
    monkeypatch.delenv(prom.ENV_PASSWORD)
    with pytest.raises(prom.PrometheusError, match="HTTP 401.*needs credentials") as missing:
        prom.fetch_daily(
            guarded.metrics_url,
            {"cpu": victoria.CPU},
            START,
            START + timedelta(days=2),
            credentials=prometheus_credentials(),
        )
    monkeypatch.setenv(prom.ENV_TOKEN, "tok-3141592653")
    with pytest.raises(prom.PrometheusError, match="refused the token") as token:
        prom.fetch_daily(
            guarded.metrics_url,
            {"cpu": victoria.CPU},
            START,
            START + timedelta(days=2),
            credentials=prometheus_credentials(),
        )
    monkeypatch.delenv(prom.ENV_TOKEN)
    in_url = f"prometheus+http://capacity:Wrong-Pa55word@127.0.0.1:{guarded.port}"
    with pytest.raises(prom.PrometheusError, match="refused the credentials from the URL") as url:
        prom.fetch_daily(in_url, {"cpu": victoria.CPU}, START, START + timedelta(days=2))
    for err in (wrong, missing, token, url):
        text = str(err.value)
        assert guarded.url in text and "cpu query:" in text
        assert not any(s in text for s in secrets), text
        assert err.value.url == guarded.url
    right_in_url = f"prometheus+http://capacity:Right-Pa55word@127.0.0.1:{guarded.port}"
    assert (
        len(prom.fetch_daily(right_in_url, {"cpu": victoria.CPU}, START, START + timedelta(days=2)))
        == 3
    )


# ------------------------------------------------------------------------------- URLs, query files


def test_urls():
    assert prom.is_prometheus("prometheus+http://h:9090") and prom.is_prometheus(
        " Prometheus+https://h"
    )
    assert not prom.is_prometheus("data/metrics/*.parquet") and not prom.is_prometheus(
        "http://h:9090"
    )
    assert prom.base_url("prometheus+http://h:9090/") == "http://h:9090"
    assert (
        prom.base_url("prometheus+https://u:secret@vm.example:8481/select/0/prometheus")
        == "https://vm.example:8481/select/0/prometheus"
    )
    for bad, says in [
        ("http://h:9090", "is not a Prometheus URL"),
        ("prometheus+ftp://h", "http or https"),
        ("prometheus+http://u:secret@h:9090?x=1", "query parameters"),
        ("prometheus+http://", "http or https"),
    ]:
        with pytest.raises(prom.PrometheusError, match=says) as e:
            prom.base_url(bad)
        assert "secret" not in str(e.value)
        assert bad.replace("u:secret@", "***@")[:20] in str(e.value)


def test_shipped_queries():
    queries = prom.load_queries(None)
    assert list(queries) == ["cpu", "memory", "disk", "network"]
    assert queries.scales == {"cpu": 100, "memory": 100, "disk": 100, "network": 100}
    assert queries["cpu"] == "instance:node_cpu_utilisation:rate5m"
    assert queries["memory"] == "instance:node_memory_utilisation:ratio"
    assert "tmpfs" in queries["disk"] and "node_network_speed_bytes" in queries["network"]
    assert (
        prom.daily_query(queries["cpu"])
        == "avg_over_time(instance:node_cpu_utilisation:rate5m[1d])"
    )
    assert prom.daily_query(queries["disk"], "p95").startswith(
        "quantile_over_time(0.95, (\nmax by (instance)"
    )
    assert prom.daily_query(queries["disk"], "max").endswith("\n)[1d:5m])")


def test_short_form_query_file(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("CPU: 'my_cpu_ratio{env=\"prod\"}'\nnetwork:\n  expr: my_net_pct\n  scale: 1\n")
    queries = prom.load_queries(str(path))
    assert dict(queries) == {"cpu": 'my_cpu_ratio{env="prod"}', "network": "my_net_pct"}
    assert queries.scales == {"cpu": None, "network": 1}
    assert prom.daily_query(queries["cpu"], "max") == 'max_over_time(my_cpu_ratio{env="prod"}[1d])'


@pytest.mark.parametrize(
    "content,says",
    [
        (None, "does not exist"),
        ("", "the query file is empty"),
        ("# only comments\n", "the query file is empty"),
        ("cpu: [unclosed\n", "not valid YAML at line"),
        ("- cpu\n- memory\n", "expected a mapping"),
        ("gpu: some_metric\n", "unknown resource 'gpu'"),
        ("cpu:\n  expr: m\n  scal: 100\n", "cpu: unknown setting 'scal'"),
        ("cpu:\n  expr: m\n  scale: 10\n", "cpu: scale must be 1 .* or 100"),
        ("memory:\n  scale: 100\n", "memory: missing expr"),
        ("disk: ''\n", "disk: the PromQL expression is empty"),
        ("network: 42\n", "network: expected a PromQL expression as text"),
        (
            "cpu: a\nmemory: m\ncpu: b\n",
            r"not valid YAML at line 3, column 1: 'cpu' is given twice \(lines 1 and 3\)",
        ),
        ("cpu:\n  expr: a\n  expr: b\n", "'expr' is given twice"),
    ],
)
def test_bad_query_files_name_the_file_and_the_key(tmp_path, content, says):
    path = tmp_path / "promql.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(prom.QueryFileError, match=says) as e:
        prom.load_queries(str(path))
    assert str(e.value).startswith(f"{path}: ")
    assert isinstance(e.value, files.InputError)  # the CLI reports it like any bad input (exit 2)


def test_a_missing_server_binary_fails_with_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="apt-get install -y victoria-metrics"):
        victoria.binary()


def test_days_a_reporting_server_lacks_are_asked_again_until_it_has_them(tmp_path):
    """Late data: 'late' has nothing for the newest day when a daily sync asks for it. That day must
    be asked for again until 'late' has it: a first sync, and a one-day span that simply lacks the
    server, used to mark it fetched for good. 'gone' stopped reporting weeks ago and is not waited for."""
    start, days = date(2024, 5, 1), 30
    last = start + timedelta(days=days - 1)
    samples = node_exporter_samples(["ok", "late", "gone"], start, days, seed=8)
    ms = lambda d: pd.Timestamp(d).value // 10**6  # noqa: E731
    now, later = [], []
    for line in samples.text.splitlines():
        t = int(line.rsplit(" ", 1)[1])
        if 'instance="gone"' in line and t >= ms(start + timedelta(days=10)):
            continue
        (later if 'instance="late"' in line and t >= ms(last - timedelta(days=1)) else now).append(
            line
        )
    queries = prom.load_queries(None)
    lines = []

    def last_days():
        return {
            m["last_day"]
            for m in json.loads((tmp_path / "manifest.json").read_text())["resources"].values()
        }

    with VictoriaMetrics() as vm:
        vm.import_prometheus("\n".join(now) + "\n")
        # a first sync: 'late' lacks the last two days
        pattern = prom.sync(
            vm.metrics_url, tmp_path, last - timedelta(days=1), days, queries, log=lines.append
        )
        assert last_days() == {(last - timedelta(days=2)).isoformat()}
        assert any("no data yet for every server for" in line for line in lines), lines
        # the next day's sync: a span of days 'late' is absent from altogether
        daily = Recorder()
        prom.sync(
            vm.metrics_url, tmp_path, last, days, queries, log=lines.append, session=daily.session
        )
        assert set(daily.days_asked()) == {
            ((last - timedelta(days=1)).isoformat(), last.isoformat())
        }
        assert last_days() == {(last - timedelta(days=2)).isoformat()}
        vm.import_prometheus("\n".join(later) + "\n")
        again = Recorder()
        prom.sync(
            vm.metrics_url, tmp_path, last, days, queries, log=lines.append, session=again.session
        )
        assert set(again.days_asked()) == {
            ((last - timedelta(days=1)).isoformat(), last.isoformat())
        }
        cache = _read_cache(pattern)
        late = cache[cache["server_id"] == "late"]
        assert late["timestamp"].max() == pd.Timestamp(last) and len(late) == 4 * days
        assert last_days() == {last.isoformat()}


def test_a_query_that_stops_matching_after_the_first_sync_stops_the_sync(tmp_path):
    """A renamed recording rule: the first sync had data, later ones got 0 series for the new days while
    the other resources had theirs. The sync said so in one quiet line and every run stayed green on
    data that ended the day of the rename."""
    start, days = date(2024, 5, 1), 20
    samples = node_exporter_samples(["a", "b"], start, days, seed=9)
    cutoff = start + timedelta(days=15)
    old, new = _split_text(samples.text, cutoff)
    renamed = (
        "\n".join(line for line in new.splitlines() if not line.startswith(victoria.CPU)) + "\n"
    )
    queries = prom.load_queries(None)
    last = start + timedelta(days=days - 1)
    with VictoriaMetrics() as vm:
        vm.import_prometheus(old)
        prom.sync(vm.metrics_url, tmp_path, cutoff - timedelta(days=1), days, queries)
        vm.import_prometheus(renamed)
        with pytest.raises(prom.NoSeriesError) as e:
            prom.sync(vm.metrics_url, tmp_path, last, days, queries)
    text = str(e.value)
    assert (
        f"no series at all for {cutoff}..{last}, while the memory query has data up to {last}"
        in text
    ), text
    assert "renamed" in text and f"cpu query: avg_over_time({victoria.CPU}[1d])" in text


def test_a_query_that_matches_nothing_on_the_first_sync_is_left_out_and_asked_again(tmp_path):
    """Virtual machines whose NICs report no link speed: the first sync stopped on 'no series at all'
    for network, and nothing said that a query file without network was the way out. Now network is
    left out with a warning naming its query, and fetched once the fleet reports it; a changed query
    that matches nothing for a resource the cache holds still stops the sync."""
    start, days = date(2024, 5, 1), 12
    last = start + timedelta(days=days - 1)
    every = node_exporter_samples(["a", "b"], start, days, seed=3).text.splitlines()
    speed = [ln for ln in every if ln.startswith("node_network_speed_bytes")]
    queries = prom.load_queries(None)
    lines = []
    with VictoriaMetrics() as vm:
        vm.import_prometheus("\n".join(ln for ln in every if ln not in set(speed)) + "\n")
        prom.sync(vm.metrics_url, tmp_path, last, days, queries, log=lines.append)
        cached = sorted(p.name for p in tmp_path.glob(prom.CACHE_GLOB))
        assert cached == ["daily_cpu.parquet", "daily_disk.parquet", "daily_memory.parquet"]
        assert "network" not in json.loads((tmp_path / "manifest.json").read_text())["resources"]
        (warning,) = [ln for ln in lines if "network left out" in ln]
        assert warning.startswith("WARNING: ") and "node_network_speed_bytes" in warning, warning
        assert "CAPACITY_PROMQL" in warning and "a file without network" in warning, warning

        vm.import_prometheus("\n".join(speed) + "\n")
        prom.sync(vm.metrics_url, tmp_path, last, days, queries, log=lines.append)
        network = pd.read_parquet(tmp_path / "daily_network.parquet")
        assert len(network) == 2 * days and network["utilization_pct"].between(1, 100).all()

        renamed = prom.Queries({**queries, "network": "no_such_metric"}, source="q.yaml")
        with pytest.raises(prom.NoSeriesError, match="network query: avg_over_time"):
            prom.sync(vm.metrics_url, tmp_path, last, days, renamed)


@pytest.mark.parametrize(
    "env",
    [
        {prom.ENV_TOKEN: "tok-3141592653"},
        {prom.ENV_USER: "capacity", prom.ENV_PASSWORD: "Env-Pa55word"},
    ],
)
def test_credentials_in_the_url_and_the_environment_are_refused_together(monkeypatch, env):
    """The URL's basic auth silently won over a token (and the environment's user over the URL's), and
    a 401 then named the credentials that were never sent."""
    for name in (prom.ENV_TOKEN, prom.ENV_USER, prom.ENV_PASSWORD):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        prom.PrometheusError, match="the URL carries credentials and CAPACITY_PROM_"
    ) as e:
        prom.fetch_daily(
            "prometheus+http://ops:Url-Pa55word@127.0.0.1:9",
            {"cpu": victoria.CPU},
            START,
            START + timedelta(days=1),
            credentials=prometheus_credentials(),
        )
    assert "Url-Pa55word" not in str(e.value) and not any(
        v in str(e.value) for v in env.values() if len(v) > 8
    )


def test_credentials_are_what_the_caller_passes_never_the_environment(guarded, monkeypatch):
    """Configuration is read in config alone: the client only knows the credentials it is given."""
    assert {prom.ENV_TOKEN, prom.ENV_USER, prom.ENV_PASSWORD} == set(PROM_CREDENTIALS.values())
    monkeypatch.setenv(prom.ENV_USER, "capacity")
    monkeypatch.setenv(prom.ENV_PASSWORD, "Right-Pa55word")
    with pytest.raises(prom.PrometheusError, match="HTTP 401.*needs credentials"):
        prom.fetch_daily(
            guarded.metrics_url, {"cpu": victoria.CPU}, START, START + timedelta(days=2)
        )
    given = {"token": "", "user": "capacity", "password": "Right-Pa55word"}
    for name in (prom.ENV_USER, prom.ENV_PASSWORD):
        monkeypatch.delenv(name)
    got = prom.fetch_daily(
        guarded.metrics_url,
        {"cpu": victoria.CPU},
        START,
        START + timedelta(days=2),
        credentials=given,
    )
    assert len(got) == 3


@pytest.mark.parametrize(
    "credentials,says",
    [
        (
            {"token": "tok-3141592653", "user": "capacity", "password": "x"},
            "both CAPACITY_PROM_TOKEN and CAPACITY_PROM_USER are set: set one of them",
        ),
        (
            {"user": "capacity"},
            "CAPACITY_PROM_USER is set but CAPACITY_PROM_PASSWORD is not",
        ),
    ],
)
def test_conflicting_or_incomplete_credentials_name_the_variables(credentials, says):
    with pytest.raises(prom.PrometheusError, match=says):
        prom.fetch_daily(
            f"prometheus+http://127.0.0.1:{_closed_port()}",
            {"cpu": victoria.CPU},
            START,
            START,
            credentials=credentials,
        )


def test_prepare_metrics_hands_on_the_configured_credentials(guarded, monkeypatch, tmp_path):
    """The server has no data for the recent days a sync asks for: 'no series' means the credentials
    got through, a 401 that they did not."""
    settings = CapacitySettings(
        metrics=guarded.metrics_url, prom_cache=str(tmp_path), prom_history_days=2
    )
    with pytest.raises(prom.PrometheusError, match="HTTP 401.*needs credentials"):
        prepare_metrics(settings)
    with pytest.raises(prom.NoSeriesError):
        prepare_metrics(settings, credentials={"user": "capacity", "password": "Right-Pa55word"})
    monkeypatch.setenv(prom.ENV_USER, "capacity")
    monkeypatch.setenv(prom.ENV_PASSWORD, "Right-Pa55word")
    with pytest.raises(prom.NoSeriesError):
        prepare_metrics(settings)  # read from the environment by config, at call time


def test_a_day_without_any_data_is_not_taken_for_a_renamed_query(tmp_path):
    """The server had nothing for the newest day (an outage): each resource's newest span is empty
    there, while one resource's span also covers older days a late server just filled. No resource
    has data on the empty day, so nothing was renamed: the sync carries on and asks again."""
    start, days = date(2024, 5, 1), 20
    last = start + timedelta(days=days - 1)
    samples = node_exporter_samples(["a", "b"], start, days, seed=10)
    ms = lambda d: pd.Timestamp(d).value // 10**6  # noqa: E731
    t = lambda ln: int(ln.rsplit(" ", 1)[1])  # noqa: E731

    def b_memory_late(ln):
        return (
            'instance="b"' in ln
            and ln.startswith(victoria.MEMORY)  # noqa: E731
            and ms(last - timedelta(days=2)) <= t(ln) < ms(last)
        )

    every = samples.text.splitlines()
    # nobody has the newest day; b's memory lacks the two days before it (memory's span starts earlier)
    vm_text = "\n".join(ln for ln in every if t(ln) < ms(last) and not b_memory_late(ln)) + "\n"
    late_b = "\n".join(ln for ln in every if b_memory_late(ln)) + "\n"
    queries = prom.load_queries(None)
    lines = []
    with VictoriaMetrics() as vm:
        vm.import_prometheus(vm_text)
        prom.sync(
            vm.metrics_url, tmp_path, last - timedelta(days=1), days, queries, log=lines.append
        )
        vm.import_prometheus(
            late_b
        )  # b's memory for the two days it lacked; nobody has the newest day
        prom.sync(vm.metrics_url, tmp_path, last, days, queries, log=lines.append)
    assert any("no data yet for every server" in line for line in lines), lines
