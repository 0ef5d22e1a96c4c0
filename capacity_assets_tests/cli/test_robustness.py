"""Bad input gets a clear answer, nothing is lost, re-runs are safe: the real CLI on hostile inputs.

Full runs are the expensive part (20–40 s each), so one deliberately nasty but forecastable fleet
is run twice and shared by most assertions; file and column errors fail in preflight, which is
instant, and are checked one by one.
"""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from capacity_assets.inputs.batching import batch_of
from capacity_assets_tests.conftest import capacity

BATCHES = 3
ODD = "srv'; drop table forecasts; --"
UNI = "ünïcode 服务器"
QUOTED = 'a "quoted" id'
FRAC = "frac srv"
SHORT = "short 5min"
DAYS = pd.date_range("2024-12-01", "2025-10-31", freq="D")  # 335 days, across both 2025 DST changes
TABLES = [
    "processed_data",
    "skipped_series",
    "prophet_results",
    "challenger_results",
    "champions",
    "forecasts",
    "risk_exceptions",
]
HEADER = "server_id,resource,timestamp,utilization_pct"


def level(n, base, amp):
    return base + amp * np.sin(np.arange(n) * 2 * np.pi / 7) + np.arange(n) * 0.03


def write_bad_fleet(root: Path) -> dict:
    """Every data problem of the contract at once, on servers whose ids would break naive SQL."""
    (root / "metrics").mkdir(parents=True)
    odd = level(len(DAYS), 50, 8)
    rows = [[ODD, "cpu", d.strftime("%Y-%m-%dT12:00:00Z"), f"{v:.3f}"] for d, v in zip(DAYS, odd)]
    for i, v in {
        3: "130",
        4: "130",
        5: "130",
        10: "-5",
        11: "-5",
        20: "NaN",
        21: "NaN",
        30: "",
        31: "",
        40: "abc",
        41: "abc",
    }.items():
        rows[i][3] = v
    for i in range(50, 60):
        rows[i][1] = "CPU"
    rows += [list(rows[i]) for i in range(100, 105)]  # exact duplicates
    rows += [
        [ODD, "cpu", rows[i][2], f"{odd[i] + 10:.3f}"] for i in (200, 201)
    ]  # overlapping, different
    rows += [[ODD, "disk_io", d.strftime("%Y-%m-%d"), "3"] for d in DAYS[:10]]
    rows += [[ODD, "Mem", d.strftime("%Y-%m-%d"), "4"] for d in DAYS[:7]]
    # hourly Europe/London local times with their own offsets (+00:00 / +01:00) across the changes
    hours = pd.date_range(
        DAYS[0], DAYS[-1] + pd.Timedelta(hours=23), freq="h", tz="UTC"
    ).tz_convert("Europe/London")
    hv = 86 + 5 * np.sin(np.arange(len(hours)) * 2 * np.pi / 24) + np.arange(len(hours)) * 0.001
    rows += [[UNI, "memory", t.isoformat(), f"{v:.2f}"] for t, v in zip(hours, hv)]
    fmts = ["%Y-%m-%d", "%Y/%m/%d", "%Y-%m-%dT00:00:00+00:00", "%Y-%m-%d 00:00:00"]
    rows += [
        [QUOTED, "disk", d.strftime(fmts[i % 4]), f"{v:.2f}"]
        for i, (d, v) in enumerate(zip(DAYS, level(len(DAYS), 30, 3)))
    ]
    five = pd.date_range("2025-10-01", periods=14 * 288, freq="5min")  # two weeks of 5-minute data
    rows += [
        [SHORT, "network", t.strftime("%Y-%m-%dT%H:%M:%S"), f"{5 + (i % 288) / 100:.2f}"]
        for i, t in enumerate(five)
    ]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    with open(root / "metrics" / "main.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Server_ID", "resource", "timestamp", "utilization_pct", "site"])
        w.writerows(r + ["lon"] for r in rows)
    frac = level(len(DAYS), 60, 5)
    pd.DataFrame(
        {
            "server_id": FRAC,
            "resource": "cpu",
            "timestamp": DAYS.strftime("%Y-%m-%d"),
            "utilization_pct": np.round(frac / 100, 5),
        }
    ).to_csv(root / "metrics" / "fractions.csv", index=False)
    pd.DataFrame(
        [
            (ODD, "Payments", "Ann"),
            (QUOTED, "Search", "Bob"),
            (FRAC, "Search", "Bob"),
            (ODD, "Risk", "Eve"),
            ("ghost", "Legacy", "Zed"),
        ],
        columns=["server_id", "department", "app_manager"],
    ).to_csv(root / "hierarchy.csv", index=False)
    return {
        "metrics": str(root / "metrics"),
        "hierarchy": str(root / "hierarchy.csv"),
        "odd": odd,
        "frac": frac,
    }


def run_env(work: Path, metrics: str, hierarchy: str = "") -> dict:
    return {
        "CAPACITY_METRICS": metrics,
        "CAPACITY_HIERARCHY": hierarchy,
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
        "CAPACITY_BATCHES": str(BATCHES),
    }


def run(work, env, *extra, check=True):
    return capacity("run", "--batches", str(BATCHES), *extra, cwd=work, env=env, check=check)


def all_succeeded(out: str) -> bool:
    m = re.search(r"Summary: (\d+)/(\d+) batches[^\n]*succeeded", out)
    return bool(m) and m.group(1) == m.group(2) and "FAILED" not in out


def sql(db, query, params=None):
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(query, params or []).fetchdf()
    finally:
        conn.close()


def snapshot(db) -> dict:
    """Row counts of every table, and the forecasts' values (seeded models: a re-run must match)."""
    out = {
        t: int(sql(db, f"select count(*) as n from {t}")["n"].iloc[0])
        for t in TABLES + ["business_hierarchy"]
    }
    out["forecasts"] = sql(
        db,
        "select batch, server_id, resource, ds, model, yhat, yhat_lower, yhat_upper "
        "from forecasts order by all",
    )
    return out


def forecast_run_ids(db) -> dict:
    """{batch: set of run_ids in its golden record}: a re-materialised batch gets a new run_id."""
    df = sql(db, "select distinct batch, run_id from forecasts")
    return {b: set(g["run_id"]) for b, g in df.groupby("batch")}


def metadata(home, asset, partition=None) -> dict:
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(AssetKey(asset), limit=50).records
    latest = [r for r in records if r.asset_materialization.partition == partition][0]
    return {k: v.value for k, v in latest.asset_materialization.metadata.items()}


# --- unusable files: refused in preflight, before the database exists ----------------------------


def _png(p):
    p.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01")


CASES = {
    "missing": (lambda p: None, "m.csv", "does not exist"),
    "empty": (lambda p: p.write_bytes(b""), "m.csv", "file is empty"),
    "no_header": (
        lambda p: p.write_text("a,cpu,2025-01-01,5\nb,cpu,2025-01-02,6\n"),
        "m.csv",
        "the first line looks like data, not a header row",
    ),
    "header_only": (
        lambda p: p.write_text(HEADER + "\n"),
        "m.csv",
        "has a header row but no data rows",
    ),
    "png": (_png, "m.png", "it is a PNG image"),
    "png_named_csv": (_png, "m.csv", "it is a PNG image"),
    "xlsx": (
        lambda p: p.write_bytes(b"PK\x03\x04\x14\0\x06\0" + b"\0" * 40),
        "m.xlsx",
        "Excel workbook",
    ),
    "misspelt": (
        lambda p: p.write_text(
            "server_id,resource,timestamp,utilisation_pct\na,cpu,2025-01-01,5\n"
        ),
        "m.csv",
        "missing required column(s) utilization_pct; columns found: server_id, resource, timestamp, "
        "utilisation_pct — is 'utilisation_pct' meant to be 'utilization_pct'?",
    ),
    "two_missing": (
        lambda p: p.write_text("host,resource,time,utilization_pct\na,cpu,2025-01-01,5\n"),
        "m.csv",
        "missing required column(s) server_id, timestamp; columns found: host, resource, time, utilization_pct",
    ),
    # every row unusable: read on, it would publish nothing over every batch's last results
    "day_first_dates": (
        lambda p: p.write_text(HEADER + "\na,cpu,31/01/2025,5\nb,cpu,01/02/2025,6\n"),
        "m.csv",
        "none of its 2 rows can be used: no value of column 'timestamp' is a time stamp (e.g. ",
    ),
    "values_with_unit": (
        lambda p: p.write_text(HEADER + "\na,cpu,2025-01-01,5%\nb,cpu,2025-01-02,6 %\n"),
        "m.csv",
        "none of its 2 rows can be used: no value of column 'utilization_pct' is a number",
    ),
    "epoch_nanoseconds": (
        lambda p: pd.DataFrame(
            {
                "server_id": ["a", "b"],
                "resource": "cpu",
                "timestamp": [1735689600 * 10**9, 1735776000 * 10**9],
                "utilization_pct": [5.0, 6.0],
            }
        ).to_parquet(p),
        "m.parquet",
        "no value of column 'timestamp' is a time stamp (e.g. '1735689600000000000')",
    ),
    "unknown_resources": (
        lambda p: p.write_text(HEADER + "\na,gpu,2025-01-01,5\nb,iops,2025-01-02,6\n"),
        "m.csv",
        "no value of column 'resource' is one of cpu, memory, disk, network",
    ),
    # a spreadsheet's Windows code page: DuckDB only says 'CSV Error on Line: 2'
    "not_utf8": (
        lambda p: p.write_bytes((HEADER + "\ncaf\xe9-01,cpu,2025-01-01,5\n").encode("cp1252")),
        "m.csv",
        "is not UTF-8 text (line 2",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_metrics_file_is_refused_naming_it_before_the_database_exists(tmp_path, case):
    make, name, expected = CASES[case]
    path = tmp_path / name
    make(path)
    env = run_env(tmp_path, str(path))
    proc = run(tmp_path, env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"capacity: error: {path}" in proc.stderr and expected in proc.stderr
    assert not list(tmp_path.glob("cap.duckdb*"))  # not even the lock file


# --- a database that cannot be used: clear message, bytes unchanged ------------------------------


def _md5(p):
    return hashlib.md5(Path(p).read_bytes()).hexdigest()


HOLD = {
    "flock": "import fcntl, os, sys, time; fd = os.open(sys.argv[1] + '.lock', os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
    "duckdb_writer": "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)",
}


@pytest.mark.parametrize(
    "holder,expected",
    [
        ("flock", "is busy: another process has held it for over 1 s"),
        ("duckdb_writer", "is locked by another program (PID"),
        ("not_duckdb", "is not a DuckDB database file"),
    ],
)
def test_a_locked_or_foreign_database_file_is_refused_and_left_byte_for_byte(
    tmp_path, holder, expected
):
    metrics = tmp_path / "m.csv"
    metrics.write_text(HEADER + "\na,cpu,2025-01-01,5\n")
    db = tmp_path / "cap.duckdb"
    if holder == "not_duckdb":
        db.write_text("server_id,department\nthis is a spreadsheet export, not a database\n")
    else:
        duckdb.connect(str(db)).execute("create table keep as select 42 as answer").close()
    before = _md5(db)
    proc_hold = None
    if holder in HOLD:
        proc_hold = subprocess.Popen(
            [sys.executable, "-c", HOLD[holder], str(db)], stdout=subprocess.PIPE, text=True
        )
        assert proc_hold.stdout.readline().strip() == "held"
    try:
        env = {**run_env(tmp_path, str(metrics)), "CAPACITY_LOCK_TIMEOUT": "1"}
        started = time.monotonic()
        proc = run(tmp_path, env, check=False)
    finally:
        if proc_hold:
            proc_hold.kill()
            proc_hold.wait()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"capacity: error: {db}" in proc.stderr and expected in proc.stderr
    assert time.monotonic() - started < 30
    assert _md5(db) == before
    assert "[1/" not in proc.stdout  # no batch started


# --- one nasty but forecastable fleet, run twice --------------------------------------------------


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bad")
    fleet = write_bad_fleet(work / "in")
    env = run_env(work, fleet["metrics"], fleet["hierarchy"])
    first = run(work, env)
    snap, first_runs = snapshot(env["CAPACITY_DB"]), forecast_run_ids(env["CAPACITY_DB"])
    second = run(work, env, "--force")  # --force: really re-materialise, not skip unchanged batches
    return {
        "work": work,
        "env": env,
        "db": env["CAPACITY_DB"],
        "home": env["DAGSTER_HOME"],
        "fleet": fleet,
        "first": first,
        "first_snapshot": snap,
        "first_run_ids": first_runs,
        "second": second,
    }


def test_the_bad_fleet_run_reports_what_it_fixed_and_forecasts_the_rest(bad_run):
    out, err = bad_run["first"].stdout, bad_run["first"].stderr
    assert "1 given as fractions 0–1, scaled x100" in out
    assert all_succeeded(out) and "series forecast: 4" in out
    assert (
        "series skipped (too short to forecast, or no recent data; see table skipped_series): 1"
        in out
    )
    assert "unknown resources {'disk_io': 10, 'Mem': 7}" in err
    assert "fractions.csv: values look like fractions 0–1 (max <= 1): multiplied by 100" in err
    assert "non-numeric utilization_pct:" in err and "utilization_pct='abc'" in err
    # repaired rows are shown too, with their file: a planner finds them in the export
    main = str(Path(bad_run["fleet"]["metrics"]) / "main.csv")
    assert re.search(
        f"clipped to 0–100, first value outside it: {re.escape(main)}: .*utilization_pct='(130|-5)'",
        err,
    ), err
    assert f"averaged duplicate samples, first: {main}: server_id=" in err


def test_bad_values_are_clipped_or_dropped_and_counted_in_the_materialisation(bad_run):
    meta = metadata(bad_run["home"], "processed_data", batch_of(ODD, BATCHES))
    assert meta["values_clipped"] == 5 and meta["missing_values_dropped"] == 4
    assert meta["non_numeric_values_dropped"] == 2 and meta["bad_timestamps_dropped"] == 0
    assert meta["duplicates_dropped"] == 7 and meta["duplicate_conflicts_averaged"] == 2
    assert meta["unknown_resource_rows_dropped"] == 17
    assert meta["unknown_resources"] == "{'disk_io': 10, 'Mem': 7}"
    assert meta["resource_names_mapped"] == "{'CPU': 10}"
    assert meta["max_samples_per_day"] == 288  # the 5-minute series
    # the counts are the run's: this small fleet's batches share one run (one worker), so the
    # fractions file is listed though its server is in the other batch
    assert meta["batches"] == BATCHES and batch_of(FRAC, BATCHES) != batch_of(ODD, BATCHES)
    assert meta["fraction_scaled_files"].endswith("fractions.csv")
    assert metadata(bad_run["home"], "processed_data", batch_of(FRAC, BATCHES)) == meta

    odd = sql(
        bad_run["db"],
        "select ds, y, filled from processed_data where server_id = ? and resource = 'cpu' "
        "order by ds",
        [ODD],
    )
    expected = bad_run["fleet"]["odd"]
    assert len(odd) == len(DAYS) and odd["y"].between(0, 100).all()
    assert list(odd["y"].iloc[3:6]) == [100.0] * 3 and list(odd["y"].iloc[10:12]) == [0.0] * 2
    dropped = [20, 21, 30, 31, 40, 41]
    assert odd["filled"].iloc[dropped].all() and odd["filled"].sum() == len(dropped)
    assert odd["y"].iloc[55] == pytest.approx(expected[55], abs=1e-3)  # 'CPU' row kept as cpu
    assert odd["y"].iloc[200] == pytest.approx(
        expected[200] + 5, abs=1e-3
    )  # overlapping samples averaged
    frac = sql(
        bad_run["db"], "select y from processed_data where server_id = ? order by ds", [FRAC]
    )["y"]
    assert np.allclose(frac, bad_run["fleet"]["frac"], atol=0.01)  # scaled, not read as 0.6 %


def test_time_zones_formats_dst_and_sub_daily_samples_give_one_complete_day_each(bad_run):
    got = sql(
        bad_run["db"],
        "select server_id, resource, count(*) as days, sum(filled::int) as filled, "
        "min(ds) as first, max(ds) as last, min(y) as lo, max(y) as hi from processed_data "
        "group by all order by all",
    ).set_index("server_id")
    for server in (UNI, QUOTED, FRAC):
        assert got.loc[server, "days"] == len(DAYS) and got.loc[server, "filled"] == 0, server
        assert (
            str(got.loc[server, "first"])[:10] == "2024-12-01"
            and str(got.loc[server, "last"])[:10] == "2025-10-31"
        )
    assert (
        got.loc[UNI, "lo"] > 85 and got.loc[UNI, "hi"] < 95
    )  # hourly means, no DST double hour or gap
    meta = metadata(bad_run["home"], "processed_data", batch_of(UNI, BATCHES))
    # the metadata counts the whole run (a range of batches): at least every hourly row of UNI
    assert meta["utc_offset_rows"] >= 24 * len(DAYS) and meta["naive_time_rows"] > 0
    assert got.loc[SHORT, "days"] == 14


def test_too_short_series_are_listed_and_the_rest_of_the_fleet_is_forecast(bad_run):
    skipped = sql(bad_run["db"], "select * from skipped_series")
    assert list(skipped["server_id"]) == [SHORT] and skipped["days"].iloc[0] == 14
    assert (
        "history of 14 measured days is shorter than the 304 days needed"
        in skipped["reason"].iloc[0]
    )
    fc = sql(bad_run["db"], "select server_id, count(*) as n from forecasts group by 1")
    assert set(fc["server_id"]) == {ODD, UNI, QUOTED, FRAC} and set(fc["n"]) == {180}


def test_hierarchy_gaps_and_conflicts_are_reported_and_unknown_owners_are_unassigned(bad_run):
    meta = metadata(bad_run["home"], "business_hierarchy")
    assert meta["servers_missing_from_hierarchy"] == 2 and meta["servers_without_metrics"] == 1
    for text in (
        f"2 server(s) in the metrics are missing from the hierarchy and will be reported as Unassigned: "
        f"{SHORT!r}, {UNI!r}",
        "1 server(s) in the hierarchy have no metrics: 'ghost'",
        f"1 server_id(s) with conflicting hierarchy rows, kept the first of each; first: {ODD!r} "
        f"(department: 'Payments' vs 'Risk'",
    ):
        assert text in meta["problems"] and text in bad_run["first"].stderr
    hier = sql(bad_run["db"], "select * from business_hierarchy where server_id = ?", [ODD])
    assert list(hier["department"]) == ["Payments"]
    risk = sql(
        bad_run["db"], "select server_id, department, app_manager, severity from risk_exceptions"
    )
    assert list(risk["server_id"]) == [UNI] and list(risk["department"]) == ["Unassigned"]


def test_odd_server_ids_are_stored_exactly_in_every_table(bad_run):
    for table in TABLES:
        ids = set(sql(bad_run["db"], f"select distinct server_id from {table}")["server_id"])
        expected = (
            {SHORT}
            if table == "skipped_series"
            else {UNI}
            if table == "risk_exceptions"
            else {ODD, UNI, QUOTED, FRAC} | ({SHORT} if table == "processed_data" else set())
        )
        assert ids == expected, table
    assert capacity(
        "report", "--out", str(bad_run["work"] / "reports"), cwd=bad_run["work"], env=bad_run["env"]
    )
    assert UNI in (bad_run["work"] / "reports" / "risk_all.csv").read_text(encoding="utf-8")


def test_running_the_whole_graph_twice_gives_the_same_tables_and_forecasts(bad_run):
    """Seeded models: the same forecasts up to float noise (XGBoost's refit differs by ~1e-4 points run to run)."""
    again, first = snapshot(bad_run["db"]), bad_run["first_snapshot"]
    # the second run really ran every batch and re-wrote it: a new run_id in every batch's golden record
    assert (
        all_succeeded(bad_run["second"].stdout)
        and f"[{BATCHES}/{BATCHES}]" in bad_run["second"].stdout
    )
    runs_first, runs_again = bad_run["first_run_ids"], forecast_run_ids(bad_run["db"])
    assert set(runs_first) == set(runs_again) == {f"batch_{i:02d}" for i in range(BATCHES)}
    assert all(len(runs_again[b]) == 1 and not runs_again[b] & runs_first[b] for b in runs_again), (
        runs_first,
        runs_again,
    )
    # ... and the tables it compares are not empty (two empty runs would compare equal)
    counts = {
        t: len(v) if isinstance(v, pd.DataFrame) else v for t, v in first.items()
    }  # forecasts: the rows
    assert set(counts) == set(TABLES + ["business_hierarchy"]) and all(
        n > 0 for n in counts.values()
    ), counts
    assert {k: v for k, v in again.items() if k != "forecasts"} == {
        k: v for k, v in first.items() if k != "forecasts"
    }
    pd.testing.assert_frame_equal(
        again["forecasts"], first["forecasts"], check_exact=False, atol=1e-3, rtol=0
    )


def test_a_fleet_with_nothing_forecastable_says_so_and_exits_non_zero(tmp_path):
    five = pd.date_range("2025-10-01", periods=14 * 288, freq="5min")
    (tmp_path / "m.csv").write_text(
        HEADER
        + "\n"
        + "".join(f"s{i},cpu,{t:%Y-%m-%dT%H:%M:%S},{10 + i}\n" for i in range(2) for t in five)
    )
    env = run_env(tmp_path, str(tmp_path / "m.csv"))
    proc = run(tmp_path, env, check=False)
    assert proc.returncode == 1
    assert "nothing could be forecast: every series is too short or invalid" in proc.stderr
    assert sql(env["CAPACITY_DB"], "select count(*) as n from skipped_series")["n"].iloc[0] == 2
    assert sql(env["CAPACITY_DB"], "select count(*) as n from forecasts")["n"].iloc[0] == 0


def test_rows_without_server_id_are_counted_and_belong_to_no_batch(tmp_path):
    from capacity_assets.inputs import files

    (tmp_path / "m.csv").write_text(
        HEADER + "\na,cpu,2025-01-01,5\n,cpu,2025-01-01,5\n  ,cpu,2025-01-02,5\n"
    )
    conn = duckdb.connect()
    sources = files.inspect_metrics(conn, str(tmp_path / "m.csv"))
    assert [f.no_server_id for f in sources] == [2] and files.distinct_servers(conn, sources) == [
        "a"
    ]


def test_rows_without_server_id_do_not_break_the_batch_fingerprints(tmp_path):
    from capacity_assets.config import CapacitySettings
    from capacity_assets.inputs import files, fingerprint

    conn = duckdb.connect()
    settings = CapacitySettings(metrics=str(tmp_path / "m.csv"), batches=BATCHES)

    def prints(rows: str) -> dict:
        (tmp_path / "m.csv").write_text(HEADER + "\n" + rows)
        return fingerprint.batch_fingerprints(
            conn, files.inspect_metrics(conn, settings.metrics), settings
        )

    with_blank = prints("a,cpu,2025-01-01,5\n,cpu,2025-01-01,5\n")
    assert set(with_blank) == {f"batch_{i:02d}" for i in range(BATCHES)}
    assert (
        prints("a,cpu,2025-01-01,5\n") == with_blank
    )  # the row without a server id belongs to no batch
    changed = prints("a,cpu,2025-01-01,6\n,cpu,2025-01-01,5\n")  # ... while a's own data counts
    assert {b for b in with_blank if changed[b] != with_blank[b]} == {batch_of("a", BATCHES)}


# --- a bad file after a good run: what was published stays --------------------------------------


def _copy_of(bad_run, tmp_path) -> dict:
    """The bad-fleet run's database and Dagster instance, copied: the tests below may not touch them."""
    import shutil

    work = tmp_path / "again"
    shutil.copytree(bad_run["work"], work, ignore=shutil.ignore_patterns("in"))
    return {
        **bad_run["env"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }


def test_a_file_without_one_usable_row_is_refused_and_the_last_results_stay(bad_run, tmp_path):
    env = _copy_of(bad_run, tmp_path)
    before = snapshot(env["CAPACITY_DB"])
    eu = tmp_path / "eu.csv"
    eu.write_text(
        HEADER
        + "\n"
        + "".join(
            f"{ODD},cpu,{d:%d/%m/%Y},{v:.2f}\n" for d, v in zip(DAYS, bad_run["fleet"]["odd"])
        )
    )
    proc = run(tmp_path, {**env, "CAPACITY_METRICS": str(eu)}, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"capacity: error: {eu}: none of its {len(DAYS)} rows can be used" in proc.stderr
    assert "[1/" not in proc.stdout  # no batch started
    after = snapshot(env["CAPACITY_DB"])
    assert {k: v for k, v in after.items() if k != "forecasts"} == {
        k: v for k, v in before.items() if k != "forecasts"
    }
    pd.testing.assert_frame_equal(after["forecasts"], before["forecasts"])


def test_a_hierarchy_without_one_server_row_is_refused_and_every_owner_stays(bad_run, tmp_path):
    """A truncated hierarchy export (only its header, or no server_id filled in) used to be stored:
    every server went Unassigned in business_hierarchy and the risk list, with exit 0."""
    env = _copy_of(bad_run, tmp_path)
    owners = "select * from business_hierarchy order by all"
    before, owners_before = snapshot(env["CAPACITY_DB"]), sql(env["CAPACITY_DB"], owners)
    for name, text in {
        "header_only.csv": "server_id,department,app_manager\n",
        "no_ids.csv": "server_id,department,app_manager\n ,Payments,ann\n,Search,bob\n",
    }.items():
        hier = tmp_path / name
        hier.write_text(text)
        proc = run(tmp_path, {**env, "CAPACITY_HIERARCHY": str(hier)}, "--force", check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert (
            f"capacity: error: CAPACITY_HIERARCHY {hier}: no row has a server_id" in proc.stderr
        ), proc.stderr
        assert "[1/" not in proc.stdout  # no batch started
        after = snapshot(env["CAPACITY_DB"])
        assert {k: v for k, v in after.items() if k != "forecasts"} == {
            k: v for k, v in before.items() if k != "forecasts"
        }
        pd.testing.assert_frame_equal(after["forecasts"], before["forecasts"])
        pd.testing.assert_frame_equal(sql(env["CAPACITY_DB"], owners), owners_before)


def test_a_batch_whose_servers_lost_every_usable_row_fails_and_keeps_its_results(bad_run, tmp_path):
    """The file still has good rows (other batches), but every row of one batch's servers is unusable:
    that batch fails with the reason and keeps what it had; the others are unchanged."""
    env = _copy_of(bad_run, tmp_path)
    before = snapshot(env["CAPACITY_DB"])["forecasts"]
    victim = batch_of(QUOTED, BATCHES)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    main = pd.read_csv(
        Path(bad_run["fleet"]["metrics"]) / "main.csv", dtype=str, keep_default_na=False
    )
    frac = pd.read_csv(
        Path(bad_run["fleet"]["metrics"]) / "fractions.csv", dtype=str, keep_default_na=False
    )
    hit = main["Server_ID"].map(lambda s: batch_of(s, BATCHES) == victim)
    assert (
        hit.any() and not hit.all() and batch_of(FRAC, BATCHES) != victim
    )  # one batch, not the file
    main.loc[hit, "timestamp"] = "31/12/2024"  # day first: no time stamp of that batch can be read
    main.to_csv(metrics / "main.csv", index=False)
    frac.to_csv(metrics / "fractions.csv", index=False)
    proc = run(tmp_path, {**env, "CAPACITY_METRICS": str(metrics)}, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert (
        f"{victim}" in out
        and "none of the input rows of its" in out
        and "its previous results are kept" in out
    )
    after = snapshot(env["CAPACITY_DB"])["forecasts"]
    kept = lambda f: f[f["batch"] == victim].reset_index(drop=True)  # noqa: E731
    assert len(kept(before)) > 0
    pd.testing.assert_frame_equal(kept(after), kept(before))


SPLIT_BACKFILL = """
import json, sys
import dagster as dg
from capacity_assets.pipeline.definitions import defs
from capacity_assets.pipeline.instance import get_instance

victim = sys.argv[1]
job = defs().resolve_job_def("capacity_forecast")
tags = {"dagster/backfill": "splitbf", "dagster/asset_partition_range_start": victim,
        "dagster/asset_partition_range_end": victim}
halves = [["processed_data", "skipped_series", "prophet_results", "challenger_results", "ets_results",
           "combination_results"],
          ["champions", "forecasts", "risk_exceptions", "capacity_plan", "forecast_history", "risk_history",
           "forecast_accuracy", "risk_calls", "risk_resolved", "batch_ledger"]]
done = [job.execute_in_process(instance=get_instance(), raise_on_error=False, tags=tags,
                               asset_selection=[dg.AssetKey(a) for a in half]).success for half in halves]
print(json.dumps(done))
"""


def test_a_split_backfill_does_not_publish_a_batch_its_first_run_failed(bad_run, tmp_path):
    """ "Materialize all" in the UI runs processed_data..models and champions onwards as two runs of one
    backfill. A batch the first run could not compute was published by the second from last week's
    data under this week's fingerprint: a green backfill, and `capacity run` then skipped it."""
    env = _copy_of(bad_run, tmp_path)
    victim = batch_of(QUOTED, BATCHES)
    ledger_before = sql(env["CAPACITY_DB"], "select * from batch_ledger where batch = ?", [victim])
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    main = pd.read_csv(
        Path(bad_run["fleet"]["metrics"]) / "main.csv", dtype=str, keep_default_na=False
    )
    hit = main["Server_ID"].map(lambda s: batch_of(s, BATCHES) == victim)
    main.loc[hit, "timestamp"] = "31/12/2024"  # no time stamp of that batch can be read
    main.to_csv(metrics / "main.csv", index=False)
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT_BACKFILL, victim],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            **env,
            "CAPACITY_METRICS": str(metrics),
            "CAPACITY_BATCHES": str(BATCHES),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not second, proc.stderr[-3000:]  # the second half fails, naming the batch
    assert f"{victim}: batch_ledger" in proc.stderr or "failed in run" in proc.stderr, proc.stderr[
        -3000:
    ]
    pd.testing.assert_frame_equal(
        sql(env["CAPACITY_DB"], "select * from batch_ledger where batch = ?", [victim]),
        ledger_before,
    )
