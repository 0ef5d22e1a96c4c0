"""The `capacity` command line on a tiny fleet, as a planner would use it."""

import csv
import os
import re

import duckdb
import pytest

from capacity_assets_tests.conftest import TINY_NEW_SERVER, TINY_SATURATING, capacity

# A real fit, not the seasonal-naive fallback: the tiny fleet fits every forecastable series with both
# engines (20 of 20); below this share the end-to-end run is mostly naive forecasts and must fail.
MIN_REAL_FIT_SHARE = 0.8


def run_ids(db) -> dict:
    """{batch: run_id} of the golden record; a batch that is re-materialised gets a new one."""
    conn = duckdb.connect(str(db), read_only=True)
    try:
        rows = conn.execute(
            "select batch, count(distinct run_id), any_value(run_id) from forecasts group by 1"
        ).fetchall()
    finally:
        conn.close()
    assert all(n == 1 for _, n, _ in rows), rows
    return {b: r for b, _, r in rows}


def test_help_explains_each_subcommand(tmp_path):
    out = capacity("--help", cwd=tmp_path).stdout
    for sub in ("demo", "run", "ui", "report", "dashboard"):
        assert sub in out
    assert "--workers" in capacity("run", "--help", cwd=tmp_path).stdout


def test_run_materialises_every_table_for_every_batch_and_prints_a_summary(tiny_run):
    out = tiny_run["stdout"]
    assert "[3/3]" in out and "3/3 batches run and succeeded" in out
    assert (
        "series forecast:" in out
        and "median champion MAPE" in out
        and "at risk within 90 days" in out
    )
    conn = duckdb.connect(tiny_run["db"], read_only=True)
    tables = {
        r[0]
        for r in conn.execute(
            "select table_name from duckdb_tables() where schema_name = 'main'"
        ).fetchall()
    }
    assert {
        "business_hierarchy",
        "processed_data",
        "skipped_series",
        "prophet_results",
        "challenger_results",
        "champions",
        "forecasts",
        "risk_exceptions",
    } <= tables
    # every non-skipped series has a 180-day golden record
    n_processed = conn.execute(
        "select count(distinct (server_id, resource)) from processed_data"
    ).fetchone()[0]
    n_skipped = conn.execute("select count(*) from skipped_series").fetchone()[0]
    per_series = conn.execute(
        "select count(*) from forecasts group by server_id, resource"
    ).fetchall()
    assert len(per_series) == n_processed - n_skipped > 0 and {n for (n,) in per_series} == {180}
    # the brand-new server is listed as skipped, not silently dropped
    assert n_skipped == 4 and {
        s for (s,) in conn.execute("select server_id from skipped_series").fetchall()
    } == {TINY_NEW_SERVER}
    # the server heading for saturation is reported, critical and within the 90-day window
    risk = conn.execute(
        "select severity, days_to_breach from risk_exceptions where server_id = ? and resource = ?",
        list(TINY_SATURATING),
    ).fetchall()
    assert len(risk) == 1 and risk[0][0] == "critical" and 0 < risk[0][1] <= 90, risk
    n_risk, n_critical = conn.execute(
        "select count(*), count(*) filter (severity = 'critical') from risk_exceptions"
    ).fetchone()
    assert (
        f"at risk within 90 days (upper bound >= 95%): {n_risk} series (critical {n_critical}"
        in out
    )


def test_runs_are_recorded_in_the_persistent_instance_the_ui_reads(tiny_run, monkeypatch):
    from dagster import AssetKey, DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", tiny_run["env"]["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        done = instance.get_materialized_partitions(AssetKey("processed_data"))
        runs = instance.get_runs()
    assert done == {"batch_00", "batch_01", "batch_02"}
    assert {r.job_name for r in runs} == {
        "capacity_forecast",
        "capacity_hierarchy",
        "capacity_freshness",
    }
    assert all(r.is_success for r in runs)


def test_report_writes_one_csv_per_department(tiny_run, tmp_path):
    proc = capacity(
        "report", "--out", str(tmp_path / "reports"), cwd=tiny_run["cwd"], env=tiny_run["env"]
    )
    files = sorted(p.name for p in (tmp_path / "reports").glob("*.csv"))
    assert "risk_all.csv" in files
    rows = list(csv.DictReader(open(tmp_path / "reports" / "risk_all.csv")))
    conn = duckdb.connect(tiny_run["db"], read_only=True)
    n_risk = conn.execute("select count(*) from risk_exceptions").fetchone()[0]
    departments = {
        d for (d,) in conn.execute("select distinct department from risk_exceptions").fetchall()
    }
    assert (
        len(rows) == n_risk >= 1 and "wrote" in proc.stdout
    )  # the tiny fleet has a saturating server
    assert {"server_id", "department", "app_manager", "severity", "days_to_breach"} <= set(rows[0])
    saturating = [r for r in rows if (r["server_id"], r["resource"]) == TINY_SATURATING]
    assert len(saturating) == 1 and saturating[0]["severity"] == "critical"
    assert saturating[0]["department"] not in ("", "Unassigned") and saturating[0]["app_manager"]
    # one file per department with exactly that department's rows, e.g. "Supply Chain" -> risk_supply_chain.csv
    per_department = {
        f"risk_{'_'.join(re.findall('[a-z0-9]+', d.lower()))}.csv": d for d in departments
    }
    assert [f for f in files if f.startswith("risk_")] == sorted(["risk_all.csv", *per_department])
    for name, department in per_department.items():
        got = list(csv.DictReader(open(tmp_path / "reports" / name)))
        assert got == [r for r in rows if r["department"] == department], name


def test_a_missing_metrics_file_is_refused_before_any_table_is_touched(tmp_path):
    db = tmp_path / "cap.duckdb"
    proc = capacity(
        "run", "--metrics", str(tmp_path / "nope.csv"), "--db", str(db), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert "nope.csv" in proc.stderr and "does not exist" in proc.stderr
    assert not db.exists()


def test_rerun_after_adding_servers_redoes_only_the_batch_that_changed(tiny_run, tmp_path):
    import shutil

    import pandas as pd

    from capacity_assets.inputs.batching import batch_of

    work = tmp_path / "rerun"
    shutil.copytree(tiny_run["cwd"], work)
    fleet = tmp_path / "fleet"
    shutil.copytree(os.path.dirname(os.path.dirname(tiny_run["env"]["CAPACITY_METRICS"])), fleet)
    # new servers with ids that hash to batch_01, cloned from an existing server's history
    metrics = pd.concat(pd.read_parquet(p) for p in sorted((fleet / "metrics").glob("*.parquet")))
    template = metrics[metrics["server_id"] == metrics["server_id"].iloc[0]]
    new_ids = [s for s in (f"added-{i:03d}" for i in range(200)) if batch_of(s, 3) == "batch_01"][
        :2
    ]
    pd.concat(template.assign(server_id=s) for s in new_ids).to_parquet(
        fleet / "metrics" / "added.parquet"
    )
    env = {
        **tiny_run["env"],
        "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    before = run_ids(env["CAPACITY_DB"])
    out = capacity("run", cwd=work, env=env).stdout
    assert "2 batch(es) unchanged" in out and "[1/1] batch_01: ok" in out
    assert "unchanged, not re-run: 2 batches (batch_00, batch_02)" in out
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    stored = {
        s
        for (s,) in conn.execute(
            "select distinct server_id from forecasts where batch = 'batch_01'"
        ).fetchall()
    }
    assert set(new_ids) <= stored
    # batch_01 was really re-written (a new run), the other two kept their rows from the first run
    after = run_ids(env["CAPACITY_DB"])
    assert set(before) == set(after) == {"batch_00", "batch_01", "batch_02"}
    assert after["batch_01"] != before["batch_01"]
    assert (after["batch_00"], after["batch_02"]) == (before["batch_00"], before["batch_02"])


def test_both_engines_land_in_duckdb_with_the_contract_columns_and_split(tiny_run):
    conn = duckdb.connect(tiny_run["db"], read_only=True)
    contract = [
        "batch",
        "server_id",
        "resource",
        "ds",
        "yhat",
        "yhat_lower",
        "yhat_upper",
        "split",
        "model",
        "demand",
        "demand_upper",
        "origin",
    ]
    for table, model in (("prophet_results", "prophet"), ("challenger_results", "challenger")):
        cols = [r[0] for r in conn.execute(f"describe {table}").fetchall()]
        assert cols == contract
        assert conn.execute(f"select typeof(ds) from {table} limit 1").fetchone()[0] == "DATE"
        per_series = conn.execute(f"""
            select server_id, resource, split, count(*), min(ds), max(ds), bool_and(yhat_lower <= yhat and yhat <= yhat_upper),
                   bool_and(yhat_lower >= 0 and yhat_upper <= 100), min(split(model, ':')[1])
            from {table} group by all""").fetchall()
        future = [r for r in per_series if r[2] == "future"]
        backtest = [r for r in per_series if r[2] == "backtest"]
        assert future and all(r[3] == 180 for r in future) and len(backtest) == len(future)
        assert all(115 <= r[3] <= 125 for r in backtest)  # 4 calendar months
        assert all(r[6] and r[7] and r[8] == model for r in per_series)
        # the future starts the day after the series' last history day
        last = dict(
            ((s, r), d)
            for s, r, d in conn.execute(
                "select server_id, resource, max(ds) from processed_data group by all"
            ).fetchall()
        )
        assert all((r[4] - last[(r[0], r[1])]).days == 1 for r in future)
        # real fits, not the seasonal-naive fallback (which would pass every check above)
        real, total = conn.execute(
            f"select count(*) filter (model = ?), count(*) from (select server_id, resource, "
            f"any_value(model) as model from {table} group by all)",
            [model],
        ).fetchone()
        assert total == len(future) and real >= MIN_REAL_FIT_SHARE * total, (table, real, total)
    real, total = conn.execute(
        "select count(*) filter (model not like '%:fallback' and model <> 'naive'), count(*) "
        "from (select distinct server_id, resource, model from forecasts)"
    ).fetchone()
    assert total == len(future) and real >= MIN_REAL_FIT_SHARE * total, ("forecasts", real, total)


def test_new_batch_count_and_a_new_hierarchy_column_leave_one_consistent_set_of_tables(
    tiny_run, tmp_path
):
    """Re-running with fewer batches removes the old batch keys (no server counted twice), and a
    column added to the hierarchy flows into business_hierarchy and risk_exceptions."""
    import shutil

    import pandas as pd

    work = tmp_path / "changed"
    shutil.copytree(tiny_run["cwd"], work)
    hierarchy = pd.read_csv(tiny_run["env"]["CAPACITY_HIERARCHY"])
    hierarchy.insert(3, "cost_center", "CC-" + hierarchy.index.astype(str))
    hierarchy.to_csv(work / "hierarchy.csv", index=False)
    env = {
        **tiny_run["env"],
        "CAPACITY_HIERARCHY": str(work / "hierarchy.csv"),
        "CAPACITY_BATCHES": "2",
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    first_run_ids = set(run_ids(tiny_run["db"]).values())
    old = duckdb.connect(tiny_run["db"], read_only=True)
    series = {
        t: old.execute(f"select count(distinct (server_id, resource)) from {t}").fetchone()[0]
        for t in ("processed_data", "forecasts", "champions", "risk_exceptions", "skipped_series")
    }
    kept = {
        t: old.execute(
            f"select count(distinct (vintage, server_id, resource)) from {t}"
        ).fetchone()[0]
        for t in ("forecast_history", "risk_history")
    }
    old.close()
    out = capacity("run", cwd=work, env=env).stdout
    assert "removed 1 batch(es) left by an earlier CAPACITY_BATCHES: batch_02" in out
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    for table, n in series.items():
        got = conn.execute(f"select count(distinct (server_id, resource)) from {table}").fetchone()[
            0
        ]
        # every series is still there (none lost with batch_02), under the new batch keys only
        assert n > 0 and got == n, (table, got, n)
        assert {b for (b,) in conn.execute(f"select distinct batch from {table}").fetchall()} <= {
            "batch_00",
            "batch_01",
        }
    for table in ("processed_data", "forecasts", "champions"):
        assert {b for (b,) in conn.execute(f"select distinct batch from {table}").fetchall()} == {
            "batch_00",
            "batch_01",
        }
    assert (
        conn.execute(
            "select count(*) from (select server_id from forecasts group by server_id "
            "having count(distinct batch) > 1)"
        ).fetchone()[0]
        == 0
    )
    assert (
        not set(run_ids(env["CAPACITY_DB"]).values()) & first_run_ids
    )  # every batch was re-written
    # the track record keeps every vintage of every series, once, under the server's new batch
    from capacity_assets.inputs.batching import batch_of

    for table, n in kept.items():
        rows = conn.execute(
            f"select distinct batch, vintage, server_id, resource from {table}"
        ).df()
        assert n > 0 and len(rows) == n == len(
            rows.drop_duplicates(["vintage", "server_id", "resource"])
        ), (table, n, rows)
        assert (rows["batch"] == rows["server_id"].map(lambda s: batch_of(s, 2))).all(), (
            table,
            rows,
        )
    # the new column is filled in, not merely declared
    expected = dict(zip(hierarchy["server_id"], hierarchy["cost_center"]))
    for table in ("business_hierarchy", "risk_exceptions"):
        got = conn.execute(f"select server_id, cost_center from {table}").fetchall()
        assert got and all(cc == expected[s] for s, cc in got), (table, got)


def test_more_batches_keep_the_track_record_once_under_each_servers_new_batch(tiny_run, tmp_path):
    """3 -> 20 batches: keys batch_00..02 survive, but most of the 20 hold no server. A key left empty
    used to keep its old vintages (the servers' rows counted twice, under the old and the new key)."""
    import shutil

    from capacity_assets.inputs.batching import batch_of

    work = tmp_path / "more"
    shutil.copytree(tiny_run["cwd"], work)
    env = {
        **tiny_run["env"],
        "CAPACITY_BATCHES": "20",
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    servers = (
        duckdb.connect(tiny_run["db"], read_only=True)
        .execute("select distinct server_id from forecast_history")
        .fetchall()
    )
    homes = {batch_of(s, 20) for (s,) in servers}
    assert {"batch_00", "batch_01", "batch_02"} - homes, (
        homes
    )  # a surviving key the new batching leaves empty
    out = capacity("run", cwd=work, env=env).stdout
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    for table in ("forecast_history", "risk_history"):
        rows = conn.execute(
            f"select distinct batch, vintage, server_id, resource from {table}"
        ).df()
        assert len(rows) > 0 and not rows.duplicated(["vintage", "server_id", "resource"]).any(), (
            table,
            rows,
        )
        assert (rows["batch"] == rows["server_id"].map(lambda s: batch_of(s, 20))).all(), (
            table,
            rows,
        )
    conn.close()
    assert "the track record follows CAPACITY_BATCHES=20: " in out, out


@pytest.mark.parametrize(
    "args,env,expected",
    [
        (
            ["run", "--workers", "0"],
            {},
            "argument --workers: expected a whole number of at least 1, not '0'",
        ),
        (
            ["run", "--workers", "-1"],
            {},
            "argument --workers: expected a whole number of at least 1, not '-1'",
        ),
        (
            ["report", "--out", "reports"],
            {"CAPACITY_LOCK_TIMEOUT": "abc"},
            "capacity: error: CAPACITY_LOCK_TIMEOUT='abc': expected the seconds to wait for the database, e.g. 600",
        ),
        (
            ["demo", "--no-run", "--servers", "0"],
            {},
            "argument --servers: expected a whole number of at least 1, not '0'",
        ),
        (
            ["demo", "--no-run", "--weeks", "-1"],
            {},
            "argument --weeks: expected a whole number of at least 0, not '-1'",
        ),
        (
            ["demo", "--no-run", "--end", "2026-13-45"],
            {},
            "argument --end: expected a day as YYYY-MM-DD, not '2026-13-45'",
        ),
        (
            ["demo", "--no-run", "--weeks", "2"],
            {},
            "capacity: error: --weeks replays runs and --no-run runs nothing",
        ),
        (
            ["notify", "--dry-run", "--out", "mail"],
            {"CAPACITY_DB": "nowhere.duckdb"},
            "capacity: error: nowhere.duckdb does not exist: run `capacity run` (or `capacity demo`) first",
        ),
        (
            ["notify"],
            {"CAPACITY_SMTP_HOST": "127.0.0.1", "CAPACITY_SMTP_TIMEOUT": "0"},
            "capacity: error: CAPACITY_SMTP_TIMEOUT must be seconds above 0, not '0'",
        ),
        (
            ["notify"],
            {"CAPACITY_SMTP_HOST": "127.0.0.1", "CAPACITY_SMTP_TIMEOUT": "-1"},
            "capacity: error: CAPACITY_SMTP_TIMEOUT must be seconds above 0, not '-1'",
        ),
        # a path a setting or flag names runs into a file ('afile'): the path is named, no traceback
        (
            ["report", "--out", "afile/reports"],
            {},
            "capacity: error: afile/reports: Not a directory",
        ),
        (["run"], {"DAGSTER_HOME": "afile/home"}, "afile/home: Not a directory"),
        (
            ["run"],
            {
                "CAPACITY_METRICS": "prometheus+http://127.0.0.1:9",
                "CAPACITY_PROM_SERVER_LABEL": "host-name",
            },
            "capacity: error: CAPACITY_PROM_SERVER_LABEL: 'host-name' is not a Prometheus label name",
        ),
    ],
)
def test_a_bad_flag_or_operational_setting_is_refused_with_exit_2_and_a_message(
    tmp_path, args, env, expected
):
    """Not a traceback, not taken silently as the default or as nothing to do: the setting is named."""
    db = tmp_path / "cap.duckdb"
    duckdb.connect(str(db)).execute("create table risk_exceptions as select 1 as a").close()
    (tmp_path / "afile").write_text("not a folder\n")
    proc = capacity(*args, cwd=tmp_path, env={"CAPACITY_DB": str(db), **env}, check=False)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
