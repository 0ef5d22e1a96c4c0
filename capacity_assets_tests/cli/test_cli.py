"""The `capacity` command line on a tiny fleet, as a planner would use it."""
import csv
import os

import duckdb
import pytest

from capacity_assets_tests.conftest import capacity


def test_help_explains_each_subcommand(tmp_path):
    out = capacity("--help", cwd=tmp_path).stdout
    for sub in ("demo", "run", "ui", "report", "dashboard"):
        assert sub in out
    assert "--workers" in capacity("run", "--help", cwd=tmp_path).stdout


def test_run_materialises_every_table_for_every_batch_and_prints_a_summary(tiny_run):
    out = tiny_run["stdout"]
    assert "[3/3]" in out and "3/3 batches run and succeeded" in out
    assert "series forecast:" in out and "median champion MAPE" in out and "at risk within 90 days" in out
    conn = duckdb.connect(tiny_run["db"], read_only=True)
    tables = {r[0] for r in conn.execute("select table_name from duckdb_tables() where schema_name = 'main'").fetchall()}
    assert {"business_hierarchy", "processed_data", "skipped_series", "prophet_results", "challenger_results",
            "champions", "forecasts", "risk_exceptions"} <= tables
    # every non-skipped series has a 180-day golden record
    n_processed = conn.execute("select count(distinct (server_id, resource)) from processed_data").fetchone()[0]
    n_skipped = conn.execute("select count(*) from skipped_series").fetchone()[0]
    per_series = conn.execute("select count(*) from forecasts group by server_id, resource").fetchall()
    assert len(per_series) == n_processed - n_skipped > 0 and {n for (n,) in per_series} == {180}


def test_runs_are_recorded_in_the_persistent_instance_the_ui_reads(tiny_run, monkeypatch):
    from dagster import AssetKey, DagsterInstance

    monkeypatch.setenv("DAGSTER_HOME", tiny_run["env"]["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        done = instance.get_materialized_partitions(AssetKey("processed_data"))
        runs = instance.get_runs()
    assert done == {"batch_00", "batch_01", "batch_02"}
    assert {r.job_name for r in runs} == {"capacity_forecast", "capacity_hierarchy"}
    assert all(r.is_success for r in runs)


def test_report_writes_one_csv_per_department(tiny_run, tmp_path):
    proc = capacity("report", "--out", str(tmp_path / "reports"), cwd=tiny_run["cwd"], env=tiny_run["env"])
    files = sorted(p.name for p in (tmp_path / "reports").glob("*.csv"))
    assert "risk_all.csv" in files
    rows = list(csv.DictReader(open(tmp_path / "reports" / "risk_all.csv")))
    n_risk = duckdb.connect(tiny_run["db"], read_only=True).execute("select count(*) from risk_exceptions").fetchone()[0]
    assert len(rows) == n_risk and "wrote" in proc.stdout
    if rows:
        assert {"server_id", "department", "app_manager", "severity", "days_to_breach"} <= set(rows[0])


def test_a_missing_metrics_file_is_refused_before_any_table_is_touched(tmp_path):
    db = tmp_path / "cap.duckdb"
    proc = capacity("run", "--metrics", str(tmp_path / "nope.csv"), "--db", str(db), cwd=tmp_path, check=False)
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
    new_ids = [s for s in (f"added-{i:03d}" for i in range(200)) if batch_of(s, 3) == "batch_01"][:2]
    pd.concat(template.assign(server_id=s) for s in new_ids).to_parquet(fleet / "metrics" / "added.parquet")
    env = {**tiny_run["env"], "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
           "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"), "CAPACITY_DB": str(work / "cap.duckdb"),
           "DAGSTER_HOME": str(work / ".dagster")}
    out = capacity("run", cwd=work, env=env).stdout
    assert "2 batch(es) unchanged" in out and "[1/1] batch_01: ok" in out
    assert "unchanged, not re-run: 2 batches (batch_00, batch_02)" in out
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    stored = {s for (s,) in conn.execute("select distinct server_id from forecasts where batch = 'batch_01'").fetchall()}
    assert set(new_ids) <= stored


def test_both_engines_land_in_duckdb_with_the_contract_columns_and_split(tiny_run):
    conn = duckdb.connect(tiny_run["db"], read_only=True)
    contract = ["batch", "server_id", "resource", "ds", "yhat", "yhat_lower", "yhat_upper", "split", "model",
                "demand", "demand_upper"]
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
        last = dict(((s, r), d) for s, r, d in conn.execute(
            "select server_id, resource, max(ds) from processed_data group by all").fetchall())
        assert all((r[4] - last[(r[0], r[1])]).days == 1 for r in future)


def test_new_batch_count_and_a_new_hierarchy_column_leave_one_consistent_set_of_tables(tiny_run, tmp_path):
    """Re-running with fewer batches removes the old batch keys (no server counted twice), and a
    column added to the hierarchy flows into business_hierarchy and risk_exceptions."""
    import shutil

    import pandas as pd

    work = tmp_path / "changed"
    shutil.copytree(tiny_run["cwd"], work)
    hierarchy = pd.read_csv(tiny_run["env"]["CAPACITY_HIERARCHY"])
    hierarchy.insert(3, "cost_center", "CC-" + hierarchy.index.astype(str))
    hierarchy.to_csv(work / "hierarchy.csv", index=False)
    env = {**tiny_run["env"], "CAPACITY_HIERARCHY": str(work / "hierarchy.csv"), "CAPACITY_BATCHES": "2",
           "CAPACITY_DB": str(work / "cap.duckdb"), "DAGSTER_HOME": str(work / ".dagster")}
    out = capacity("run", cwd=work, env=env).stdout
    assert "removed 1 batch(es) left by an earlier CAPACITY_BATCHES: batch_02" in out
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    for table in ("processed_data", "forecasts", "champions", "risk_exceptions", "skipped_series"):
        assert {b for (b,) in conn.execute(f"select distinct batch from {table}").fetchall()} <= {"batch_00", "batch_01"}
    assert conn.execute("select count(*) from (select server_id from forecasts group by server_id "
                        "having count(distinct batch) > 1)").fetchone()[0] == 0
    for table in ("business_hierarchy", "risk_exceptions"):
        assert "cost_center" in [r[0] for r in conn.execute(f"describe {table}").fetchall()]
