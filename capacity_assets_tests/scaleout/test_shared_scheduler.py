"""Runs on one shared Dask scheduler (real scheduler, two real workers, PostgreSQL-backed instance).

dagster-dask names each Dask task ``"{job_name}.{step_key}"``; two runs of one job at once on one
scheduler then share their steps, and the later run "succeeds" without computing anything. The
project's executor puts the run id in the key. The workers start with their own empty folders and
only the environment a remote host would have; their CAPACITY_THRESHOLD is 90 where the launchers
use the default 95, which only the settings probe reads.
"""

import json
import subprocess
import sys
from types import SimpleNamespace

import psycopg
import pytest
from dagster import DagsterEventType

from capacity_assets import config
from capacity_assets.pipeline.resources import settings_tag
from capacity_assets_tests.scaleout import probe
from capacity_assets_tests.servers import (
    base_env,
    dask_cluster,
    open_instance,
    stray_files,
    write_instance,
)

WORKER_SETTINGS = {"CAPACITY_THRESHOLD": "90"}


@pytest.fixture(scope="module")
def shared(postgres_server, tmp_path_factory):
    """A scheduler with two workers, the instance (open here to read the runs' events) and a
    database the probes record to."""
    root = tmp_path_factory.mktemp("scaleout")
    instance_db = postgres_server.create_database("dagster")
    records = postgres_server.create_database("records")
    with psycopg.connect(records, autocommit=True) as conn:
        conn.execute(probe.STEPS_TABLE)
    launcher_env = write_instance(root / "launcher-home", instance_db)
    launcher_dir = root / "launcher"
    launcher_dir.mkdir()
    # the workers' own DAGSTER_HOME (the same yaml), as a host of their own would have
    worker_env = {**write_instance(root / "worker-home", instance_db), **WORKER_SETTINGS}
    with (
        dask_cluster(worker_env, root / "cluster", workers=2) as cluster,
        open_instance(launcher_env) as instance,
    ):
        yield SimpleNamespace(
            cluster=cluster,
            instance=instance,
            launcher_env=launcher_env,
            launcher_dir=launcher_dir,
            records=records,
            launched=0,
        )


def launch(shared, job: str, n: int, tags=None) -> list[dict]:
    """``n`` runs of ``job`` started at once, each from a process of its own (as `capacity run`
    and the Dagster daemon start runs of capacity_forecast); returns their {run_id, success}."""
    shared.launched += 1
    args = [sys.executable, "-m", "capacity_assets_tests.scaleout.probe", job]
    args += [shared.cluster.address, shared.records, f"{job}-{shared.launched}", str(n)]
    args += [json.dumps(tags or {})]
    procs = [
        subprocess.Popen(
            args,
            env={**base_env(), **shared.launcher_env},
            cwd=shared.launcher_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, f"launcher exited {p.returncode}:\n{stderr[-3000:]}"
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def recorded(shared, run_id: str) -> list[tuple[str, int]]:
    """(step, pid) of every step a probe recorded as computed for ``run_id``."""
    with psycopg.connect(shared.records) as conn:
        return conn.execute(
            "select step, pid from steps where run_id = %s order by step", (run_id,)
        ).fetchall()


def step_events(shared, run_id: str):
    return [
        e.dagster_event
        for e in shared.instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.step_key
    ]


def error_text(event) -> str:
    """The messages of an event's error and of its causes (Dagster wraps a resource's failure)."""
    data = event.event_specific_data
    err, text = getattr(data, "error", None), []
    while err is not None:
        text.append(err.message)
        err = err.cause
    return "\n".join(text)


def assert_workers_wrote_nothing_local(shared) -> None:
    for name, folder in shared.cluster.dirs.items():
        assert stray_files(folder) == [], f"worker {name} wrote local files"


def test_two_runs_of_one_job_at_once_each_compute_their_own_steps(shared):
    runs = launch(shared, "probe", 2)
    workers = set(shared.cluster.pids.values())
    assert all(r["success"] for r in runs)
    assert len({r["run_id"] for r in runs}) == 2
    for r in runs:
        # each run's steps were computed for it (the step itself recorded the run id) on a worker
        rows = recorded(shared, r["run_id"])
        assert [step for step, _ in rows] == ["first", "second"]
        assert {pid for _, pid in rows} <= workers
        # and its own event log has each step's start and success, written from a worker
        events = step_events(shared, r["run_id"])
        for kind in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
            assert sorted(e.step_key for e in events if e.event_type == kind) == [
                "first",
                "second",
            ]
        assert {e.pid for e in events} <= workers
    assert_workers_wrote_nothing_local(shared)


def test_dagster_dasks_own_executor_hands_the_later_run_the_earlier_runs_steps(shared):
    """The failure the executor above prevents: both runs report success, but one computed nothing
    (no step of it ran and its event log has no step): Dask handed it the other run's results."""
    runs = launch(shared, "stock", 2)
    assert all(r["success"] for r in runs)
    computed = [r for r in runs if recorded(shared, r["run_id"])]
    assert len(computed) == 1
    idle = next(r for r in runs if r is not computed[0])
    assert step_events(shared, idle["run_id"]) == []


def test_a_step_on_a_worker_with_other_settings_fails_naming_them(shared):
    """The launcher's result settings are the defaults (threshold 95); the workers' threshold is
    90. The step fails where its resources start on the worker, before it computes anything."""
    (run,) = launch(shared, "settings", 1, tags=settings_tag(config.load({})))
    assert not run["success"]
    failed = [
        e
        for e in step_events(shared, run["run_id"])
        if e.event_type in (DagsterEventType.RESOURCE_INIT_FAILURE, DagsterEventType.STEP_FAILURE)
    ]
    assert [e.step_key for e in failed] == ["reads_settings"]
    assert failed[0].pid in set(shared.cluster.pids.values())
    text = error_text(failed[0])
    assert "CAPACITY_THRESHOLD differs on this worker: 90.0 here, 95.0 in the run" in text
    assert "every host needs the same CAPACITY_* settings" in text
    assert "CAPACITY_BATCHES" not in text  # only what differs is named
    assert_workers_wrote_nothing_local(shared)
