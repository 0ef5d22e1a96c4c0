"""Tiny Dagster jobs for the scale-out tests, and how a test launches them.

The jobs' steps record in PostgreSQL which run computed them and in which process, so a test sees
whether a run's steps were really computed for it on a shared Dask scheduler; no Prophet fit, a
run takes seconds. They live in an importable module (not a test file) because every Dask worker
rebuilds the job from its code pointer.

The first step waits until every run launched with its own exists, so runs launched together
have surely submitted their steps to the scheduler before any of them finishes.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dagster as dg

PAIR_TAG = "probe/pair"  # runs launched together carry the same value
SIZE_TAG = "probe/size"  # and how many they are
HOLD_SECONDS = 1.0  # after every run of the pair started, so all have submitted their steps
STEPS_TABLE = "create table steps (run_id text, step text, pid integer)"


class Recorder(dg.ConfigurableResource):
    """Where a step records (run id, step, pid): a PostgreSQL database every process reaches."""

    url: str

    def record(self, run_id: str, step: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("insert into steps values (%s, %s, %s)", (run_id, step, os.getpid()))


@dg.op(out=dg.Out(dg.Nothing))
def first(context, recorder: Recorder) -> None:
    """Runs until every run launched with this one exists (each submits its steps right after it
    starts), so on a shared scheduler the runs' steps are surely in flight together."""
    tags = context.run.tags
    runs = dg.RunsFilter(tags={PAIR_TAG: tags.get(PAIR_TAG, context.run_id)})
    deadline = time.monotonic() + 60
    while (
        context.instance.get_runs_count(runs) < int(tags.get(SIZE_TAG, 1))
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    time.sleep(HOLD_SECONDS)
    recorder.record(context.run_id, "first")


@dg.op(ins={"after": dg.In(dg.Nothing)})
def second(context, recorder: Recorder) -> None:
    recorder.record(context.run_id, "second")


def _probe(name: str, executor_def: dg.ExecutorDefinition) -> dg.JobDefinition:
    @dg.job(
        name=name,
        executor_def=executor_def,
        resource_defs={"recorder": Recorder.configure_at_launch()},
    )
    def probe():
        second(after=first())

    return probe


def probe_job() -> dg.JobDefinition:
    """Two steps, one after the other, on the project's Dask executor (task keys per run)."""
    from capacity_assets.pipeline.executors import dask_executor

    return _probe("scaleout_probe", dask_executor())


def stock_probe_job() -> dg.JobDefinition:
    """The same steps on dagster-dask's own executor (task keys per job and step only)."""
    from dagster_dask import dask_executor

    return _probe("scaleout_probe_stock", dask_executor)


def settings_probe_job() -> dg.JobDefinition:
    """One step that needs the settings resource, built from the environment of the process that
    builds the job: on a Dask worker, the worker's own CAPACITY_* settings."""
    from capacity_assets import config
    from capacity_assets.pipeline.executors import dask_executor
    from capacity_assets.pipeline.resources import SettingsResource

    @dg.op(required_resource_keys={"settings"})
    def reads_settings(context) -> None:
        context.resources.settings.get()

    @dg.job(
        name="scaleout_settings_probe",
        executor_def=dask_executor(),
        resource_defs={"settings": SettingsResource.wrap(config.load())},
    )
    def settings_probe():
        reads_settings()

    return settings_probe


JOBS = {"probe": probe_job, "stock": stock_probe_job, "settings": settings_probe_job}


def launch(job: str, instance, address: str, url: str, pair: str, n: int, tags=None) -> dict:
    """One run of ``job`` on the scheduler at ``address``, one of ``n`` launched together as
    ``pair``; returns {run_id, success}. Each run from a process of its own (``main``), as
    `capacity run` does: two runs starting in threads of one process deadlock in Dagster (one
    thread's logging.config.dictConfig of the instance's python_logs against the other's event
    log handler)."""
    run_config: dict = {"execution": {"config": {"cluster": {"existing": {"address": address}}}}}
    if job != "settings":
        run_config["resources"] = {"recorder": {"config": {"url": url}}}
    result = dg.execute_job(
        dg.reconstructable(JOBS[job]),
        instance=instance,
        run_config=run_config,
        tags={**(tags or {}), PAIR_TAG: pair, SIZE_TAG: str(n)},
        raise_on_error=False,
    )
    return {"run_id": result.run_id, "success": result.success}


def main(argv: list[str]) -> None:
    """``python -m capacity_assets_tests.scaleout.probe JOB ADDRESS URL PAIR N TAGS_JSON``:
    one run against DAGSTER_HOME's instance; prints its {run_id, success} as JSON."""
    job, address, url, pair, n, tags = argv
    with dg.DagsterInstance.get() as instance:
        print(json.dumps(launch(job, instance, address, url, pair, int(n), json.loads(tags))))


if __name__ == "__main__":
    # through the module's import name, so the job's code pointer is one a Dask worker can load
    from capacity_assets_tests.scaleout import probe

    probe.main(sys.argv[1:])
