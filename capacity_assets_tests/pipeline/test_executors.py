"""The executor is configuration: the same graph runs on a local Dask cluster (worker processes).
A run carries its result settings, and a step whose process reads others fails naming them; a
DuckDB file is refused with a remote scheduler. (Shared schedulers: capacity_assets_tests/scaleout.)"""

import inspect
import json
import os

import dagster as dg
import duckdb
import pytest
from dagster import DagsterEventType, DagsterInstance

from capacity_assets import config
from capacity_assets.config import CapacitySettings, ConfigError
from capacity_assets.inputs.fingerprint import result_settings
from capacity_assets.pipeline import dagster_private, executors
from capacity_assets.pipeline.resources import SETTINGS_TAG, SettingsResource, settings_tag
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
    starts = [e for e in events if e.event_type == DagsterEventType.STEP_START]
    step_pids = {e.pid for e in starts}
    # the steps ran in the Dask workers' processes, not in the run's own process; and in the two
    # long-lived workers, where the multiprocess executor would start a process per step
    assert step_pids and run_pid not in step_pids
    assert len(step_pids) <= 2 < len(starts)
    # the run carries the result settings a worker checks its own against
    assert json.loads(runs[0].tags[SETTINGS_TAG]) == json.loads(
        json.dumps(result_settings(config.load({**os.environ, **env})))
    )


def test_the_dask_executor_is_dagster_dasks_with_task_keys_per_run():
    """Same name and configuration as dagster-dask's executor, whose subclass it builds (what it
    changes shows on a real shared scheduler: scaleout/test_shared_scheduler.py)."""
    import dagster_dask

    remote = CapacitySettings(executor="dask", dask_address="tcp://127.0.0.1:8786", db="x.duckdb")
    definition = executors.build_executor(remote)
    assert definition.name == dagster_dask.dask_executor.name == "dask"
    assert (
        executors.dask_executor().config_schema.config_type.key
        == dagster_dask.dask_executor.config_schema.config_type.key
    )
    assert issubclass(executors._definitions()["DaskExecutor"], dagster_dask.executor.DaskExecutor)
    # the private context it copies: built from these, and dagster-dask reads job_name from it
    init = inspect.signature(dagster_private.PlanOrchestrationContext.__init__).parameters
    assert {"plan_data", "log_manager", "executor", "output_capture", "resume_from_failure"} <= set(
        init
    )
    assert "plan_context.job_name" in inspect.getsource(dagster_dask.executor.DaskExecutor.execute)


def _settings_job(settings: CapacitySettings) -> dg.JobDefinition:
    @dg.op(required_resource_keys={"settings"})
    def reads_settings(context):
        return context.resources.settings.get().threshold

    @dg.job(resource_defs={"settings": SettingsResource.wrap(settings)})
    def settings_check():
        reads_settings()

    return settings_check


def test_a_run_with_the_same_settings_runs_and_one_with_others_fails_naming_them():
    here = CapacitySettings(threshold=90.0, engines="prophet,ets")
    job = _settings_job(here)
    assert job.execute_in_process(tags=settings_tag(here)).success
    assert job.execute_in_process().success  # a run without the tag (a plain UI launch): no check
    with pytest.raises(dg.DagsterResourceFunctionError) as failed:
        job.execute_in_process(tags=settings_tag(CapacitySettings()))
    text = str(failed.value.__cause__)
    assert "CAPACITY_THRESHOLD differs on this worker: 90.0 here, 95.0 in the run" in text
    assert (
        "CAPACITY_ENGINES differs on this worker: prophet,ets here, prophet,challenger,ets in the run"
        in text
    )
    assert "CAPACITY_BATCHES" not in text and text.endswith(
        "every host needs the same CAPACITY_* settings"
    )


@pytest.mark.parametrize(
    "settings, refused",
    [
        (dict(executor="dask", dask_address="tcp://10.0.0.5:8786"), True),
        (dict(executor="dask", dask_address="tcp://10.0.0.5:8786", db="postgresql://u@h/d"), False),
        (dict(executor="dask", dask_address="tcp://10.0.0.5:8786", db="postgres://u@h/d"), False),
        (dict(executor="dask"), False),  # a local cluster shares this machine's disk
        (dict(executor="in_process", dask_address="tcp://10.0.0.5:8786"), False),
    ],
)
def test_a_duckdb_file_is_refused_with_a_remote_dask_scheduler_only(settings, refused):
    if not refused:
        CapacitySettings(**settings).validate()
        return
    with pytest.raises(ConfigError, match="cannot share one DuckDB file") as e:
        CapacitySettings(**settings).validate()
    assert "set CAPACITY_DB=postgresql://" in str(e.value)
