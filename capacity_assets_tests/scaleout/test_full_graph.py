"""The whole graph beyond one machine: `capacity run` with a PostgreSQL store, a Dagster instance on
PostgreSQL and a real Dask cluster whose workers share no disk with the launcher or each other.

The results must equal the embedded run's (DuckDB, in-process) on the same input, table by table;
two ranges run at once on the one scheduler and each computes its own batches; a worker killed
while it fits or while it publishes loses nothing and leaves no batch half-published.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import DagsterEventType, RunsFilter

from capacity_assets.store.db import reading, table_names
from capacity_assets_tests.conftest import BIN
from capacity_assets_tests.servers import (
    base_env,
    dask_cluster,
    open_instance,
    stray_files,
    write_instance,
)

# what differs between two runs of the same input by nature, not by result
VOLATILE = {"run_id", "published_at", "generated_at", "sent_at", "superseded_at"}
# what a re-run of one batch recomputes from the input alone; the track record (vintages, their
# scores, exceptions' lifecycles) also remembers the run before it, so it is compared with 'old' only
RECOMPUTED = {
    "processed_data",
    "skipped_series",
    "prophet_results",
    "challenger_results",
    "ets_results",
    "combination_results",
    "champions",
    "forecasts",
    "capacity_plan",
    "batch_ledger",
}
BATCHES = "3"


def settings_env(fleet: dict, store_url: str) -> dict[str, str]:
    """The CAPACITY_* settings every host gets (a path every worker can read; no DuckDB path)."""
    return {
        "CAPACITY_METRICS": str(Path(fleet["metrics"]).resolve()),
        "CAPACITY_HIERARCHY": str(Path(fleet["hierarchy"]).resolve()),
        "CAPACITY_DB": store_url,
        "CAPACITY_BATCHES": BATCHES,
    }


def run_capacity(env: dict, cwd: Path, *args: str, timeout: float = 900) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "capacity"), "run", *args],
        env={**base_env(), **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def tables_of(db: str) -> dict[str, pd.DataFrame]:
    """Every published table, in a stable order, without what differs between runs by nature."""
    out = {}
    with reading(db) as conn:
        for name in sorted(table_names(conn, "main")):
            frame = conn.execute(f'select * from main."{name}"').fetchdf()
            frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
            out[name] = frame.sort_values(list(frame.columns), ignore_index=True, kind="stable")
    return out


def assert_same_tables(
    ours: dict, theirs: dict, only_batches: set[str] | None = None, tables=None
) -> None:
    assert set(ours) == set(theirs)
    for name in sorted(tables or ours):
        a, b = ours[name], theirs[name]
        if only_batches is not None and "batch" in a.columns:
            a = a[a["batch"].isin(only_batches)].reset_index(drop=True)
            b = b[b["batch"].isin(only_batches)].reset_index(drop=True)
        assert list(a.columns) == list(b.columns), name
        assert len(a) == len(b), f"{name}: {len(a)} rows against {len(b)}"
        for col in a.columns:
            x, y = a[col], b[col]
            if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
                np.testing.assert_allclose(
                    x.astype(float), y.astype(float), rtol=0, atol=1e-6, err_msg=f"{name}.{col}"
                )
            elif pd.api.types.is_datetime64_any_dtype(x) or pd.api.types.is_datetime64_any_dtype(y):
                x, y = pd.to_datetime(x), pd.to_datetime(y)
                assert ((x == y) | (x.isna() & y.isna())).all(), f"{name}.{col}"
            else:
                left = x.astype(object).where(x.notna(), None).tolist()
                right = y.astype(object).where(y.notna(), None).tolist()
                assert left == right, f"{name}.{col}"


@pytest.fixture(scope="module")
def embedded(tiny_run) -> dict[str, pd.DataFrame]:
    """The embedded default's tables: DuckDB, in-process executor, the same tiny fleet."""
    return tables_of(tiny_run["db"])


@pytest.fixture(scope="module")
def deployment(postgres_server, tmp_path_factory, tiny_fleet):
    """A PostgreSQL store and instance, and the settings every host gets."""
    root = tmp_path_factory.mktemp("deployment")
    store = postgres_server.create_database("capacity")
    instance = postgres_server.create_database("dagster")
    settings = settings_env(tiny_fleet, store)
    launcher = {**settings, **write_instance(root / "launcher-home", instance)}
    workers = {**settings, **write_instance(root / "worker-home", instance)}
    (root / "launcher").mkdir()
    return SimpleNamespace(root=root, store=store, launcher=launcher, workers=workers)


@pytest.fixture(scope="module")
def cluster_run(deployment):
    """The whole graph through `capacity run` on the Dask cluster, two ranges at once."""
    with dask_cluster(deployment.workers, deployment.root / "cluster", workers=2) as cluster:
        env = {
            **deployment.launcher,
            "CAPACITY_EXECUTOR": "dask",
            "CAPACITY_DASK_ADDRESS": cluster.address,
        }
        proc = run_capacity(env, deployment.root / "launcher", "--workers", "2")
        out, _ = proc.communicate(timeout=900)
        yield SimpleNamespace(code=proc.returncode, out=out, cluster=cluster, env=env)


def step_pids(instance, run_id: str) -> dict[str, int]:
    records = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
    return {r.step_key: r.dagster_event.pid for r in records}


def test_the_graph_on_the_cluster_equals_the_embedded_run_table_by_table(
    cluster_run, embedded, deployment
):
    assert cluster_run.code == 0, cluster_run.out[-4000:]
    assert_same_tables(tables_of(deployment.store), embedded)


def test_steps_ran_on_both_workers_and_each_range_computed_its_own_batches(cluster_run, deployment):
    assert cluster_run.code == 0, cluster_run.out[-4000:]
    workers = set(cluster_run.cluster.pids.values())
    with open_instance(deployment.launcher) as instance:
        runs = instance.get_run_records(RunsFilter(job_name="capacity_forecast"))
        assert len(runs) == 2, "two ranges: two runs at once on the one scheduler"
        seen = set()
        for record in runs:
            pids = step_pids(instance, record.dagster_run.run_id)
            assert "processed_data" in pids and "batch_ledger" in pids
            assert set(pids.values()) <= workers, "a step ran outside the Dask workers"
            seen |= set(pids.values())
        assert seen == workers, "both workers took steps"
        by_run = {r.dagster_run.run_id: r.dagster_run.tags for r in runs}
    with reading(deployment.store) as conn:
        ledger = conn.execute("select batch, run_id from main.batch_ledger").fetchall()
    for batch, run_id in ledger:
        tags = by_run[run_id]  # each batch was published by the run whose range holds it
        first = tags["dagster/asset_partition_range_start"]
        last = tags["dagster/asset_partition_range_end"]
        assert first <= batch <= last
    assert len({run_id for _, run_id in ledger}) == 2


def test_no_worker_writes_a_file_of_its_own(cluster_run):
    assert cluster_run.code == 0, cluster_run.out[-4000:]
    for name, folder in cluster_run.cluster.dirs.items():
        assert stray_files(folder) == [], name


def test_capacity_report_reads_the_postgresql_store(cluster_run, deployment, embedded, tmp_path):
    assert cluster_run.code == 0
    proc = subprocess.run(
        [str(BIN / "capacity"), "report", "--out", str(tmp_path / "reports")],
        env={**base_env(), **deployment.launcher},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    risk = pd.read_csv(tmp_path / "reports" / "risk_all.csv")
    assert len(risk) == len(embedded["risk_exceptions"]) > 0
    assert "***" not in proc.stdout or "postgresql" in proc.stdout


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _running_step(instance, step: str | None = None):
    """(run id, step key, pid) of a step that started and has not finished yet."""
    for record in instance.get_run_records(RunsFilter(job_name="capacity_forecast")):
        run_id = record.dagster_run.run_id
        started = {
            r.step_key: r.dagster_event.pid
            for r in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        }
        done = {
            r.step_key
            for r in instance.all_logs(
                run_id, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
            )
        }
        for key, pid in started.items():
            if key not in done and (step is None or key == step):
                return run_id, key, pid
    return None


def _worker_of(cluster, pid: int) -> str:
    return next(name for name, p in cluster.pids.items() if p == pid)


@pytest.fixture
def fresh(deployment, tmp_path, postgres_server):
    """A store of its own holding last week's results (history ending 7 days earlier), so that a
    batch is told 'old' from 'new' after a worker dies; and a cluster of two workers."""
    store = postgres_server.create_database()
    old_metrics = tmp_path / "old.parquet"
    metrics = deployment.workers["CAPACITY_METRICS"]
    with duckdb.connect() as conn:
        conn.execute(
            f"copy (select * from read_parquet('{metrics}') where timestamp < "
            f"(select max(timestamp) from read_parquet('{metrics}')) - interval '7 days') "
            f"to '{old_metrics}' (format parquet)"
        )
    instance = postgres_server.create_database()
    old_env = {
        **deployment.launcher,
        "CAPACITY_DB": store,
        "CAPACITY_METRICS": str(old_metrics),
        **write_instance(tmp_path / "old-home", instance),
    }
    (tmp_path / "launcher").mkdir()
    proc = run_capacity(old_env, tmp_path / "launcher")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    home = write_instance(tmp_path / "home", instance)
    workers = {**deployment.workers, "CAPACITY_DB": store, **home}
    with dask_cluster(workers, tmp_path / "cluster", workers=2) as cluster:
        env = {
            **deployment.launcher,
            "CAPACITY_DB": store,
            **home,
            "CAPACITY_EXECUTOR": "dask",
            "CAPACITY_DASK_ADDRESS": cluster.address,
        }
        yield SimpleNamespace(
            store=store,
            old=tables_of(store),
            cluster=cluster,
            env=env,
            cwd=tmp_path / "launcher",
            instance_env=home,
        )


def _each_batch_old_or_new(store: str, old: dict, new: dict) -> None:
    now = tables_of(store)
    for batch in sorted(set(now["batch_ledger"]["batch"]) | set(old["batch_ledger"]["batch"])):
        try:
            assert_same_tables(now, old, {batch})
        except AssertionError:  # wholly new, or wholly old
            assert_same_tables(now, new, {batch}, RECOMPUTED)


def test_a_worker_killed_while_it_fits_loses_nothing(fresh, embedded):
    proc = run_capacity(fresh.env, fresh.cwd, "--batch", "batch_00")
    with open_instance(fresh.instance_env) as instance:
        run_id, step, pid = _wait_for(
            lambda: _running_step(instance, "prophet_results"), 600, "prophet_results to start"
        )
    fresh.cluster.kill_worker(_worker_of(fresh.cluster, pid))
    out, _ = proc.communicate(timeout=900)
    _each_batch_old_or_new(fresh.store, fresh.old, embedded)
    if proc.returncode != 0:  # the run failed naming its batch; a re-run on the survivor repairs
        assert "batch_00" in out, out[-3000:]
        again = run_capacity(fresh.env, fresh.cwd, "--batch", "batch_00")
        out, _ = again.communicate(timeout=900)
        assert again.returncode == 0, out[-3000:]
    assert_same_tables(tables_of(fresh.store), embedded, {"batch_00"}, RECOMPUTED)


def test_a_worker_killed_while_it_publishes_leaves_every_table_as_it_was(fresh, embedded):
    """The test holds batch_00's rows of forecasts (a table published late in the transaction);
    the publishing worker blocks there with the earlier tables already replaced in its
    transaction, is killed, and nobody ever sees those replacements."""
    url = fresh.store
    holder = psycopg.connect(url)
    holder.execute("select 1 from main.forecasts where batch = 'batch_00' for update")
    proc = run_capacity(fresh.env, fresh.cwd, "--batch", "batch_00")
    try:
        with psycopg.connect(url, autocommit=True) as watch:
            _wait_for(
                lambda: watch.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                    "and query ilike 'delete from main.%forecasts%'"
                ).fetchone()[0],
                600,
                "the publish to wait on forecasts",
            )
        with open_instance(fresh.instance_env) as instance:
            _, step, pid = _wait_for(lambda: _running_step(instance), 60, "the publishing step")
        fresh.cluster.kill_worker(_worker_of(fresh.cluster, pid))
        time.sleep(1)
        assert_same_tables(tables_of(url), fresh.old)  # every table as it was, mid-publish too
    finally:
        threading.Timer(0, holder.rollback).run()
        holder.close()
    out, _ = proc.communicate(timeout=900)
    _each_batch_old_or_new(url, fresh.old, embedded)
    if proc.returncode != 0:
        assert "batch_00" in out, out[-3000:]
    assert os.path.isdir(fresh.cwd)
