"""The executor is configuration: the same graph runs on a local Dask cluster (worker processes)."""

import duckdb
from dagster import DagsterEventType, DagsterInstance

from capacity_assets_tests.conftest import capacity


def test_a_batch_runs_on_a_local_dask_cluster(tiny_fleet, tmp_path, monkeypatch):
    env = {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
        "CAPACITY_EXECUTOR": "dask",
        "CAPACITY_DASK_WORKERS": "2",
    }
    proc = capacity(
        "run", "--batch", "batch_00", "--batch", "batch_01", "--workers", "1", cwd=tmp_path, env=env
    )
    assert "2/2 batches run and succeeded" in proc.stdout
    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    batches = {b for (b,) in conn.execute("select distinct batch from forecasts").fetchall()}
    assert batches == {
        "batch_00",
        "batch_01",
    }  # both batches written (the tiny fleet has servers in each)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "capacity_forecast"]
        # one run covered the range of both batches (its tags say which), its steps on the cluster
        assert len(runs) == 1 and runs[0].is_success
        assert (
            runs[0].tags.get("dagster/asset_partition_range_start"),
            runs[0].tags.get("dagster/asset_partition_range_end"),
        ) == ("batch_00", "batch_01")
        events = [e.dagster_event for e in instance.all_logs(runs[0].run_id) if e.dagster_event]
    run_pid = next(e.pid for e in events if e.event_type == DagsterEventType.RUN_START)
    step_pids = {e.pid for e in events if e.event_type == DagsterEventType.STEP_START}
    # the steps ran in the Dask workers' processes, not in the run's own process
    assert step_pids and run_pid not in step_pids
