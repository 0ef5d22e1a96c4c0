"""One run over a range of batches: each batch comes out exactly as it does alone, and a batch that
fails costs the others nothing (they are published, it keeps its previous results, the run fails
naming it, and re-running it alone repairs it)."""

import os
import subprocess

import dagster as dg
import duckdb
import pandas as pd
import pytest

from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.io_manager import CapacityDuckDBIOManager
from capacity_assets.schema import conform
from capacity_assets_tests.conftest import BIN

VOLATILE = {"run_id", "generated_at", "published_at"}
TABLES = [
    "processed_data",
    "skipped_series",
    "prophet_results",
    "challenger_results",
    "ets_results",
    "combination_results",
    "champions",
    "forecasts",
    "risk_exceptions",
    "capacity_plan",
    "batch_ledger",
]


def run(args, work, env):
    proc = subprocess.run(
        [str(BIN / "capacity"), *args],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def tables(db):
    conn = duckdb.connect(db, read_only=True)
    try:
        out = {}
        for t in TABLES:
            frame = conn.execute(f"select * from {t}").fetchdf()
            keep = [c for c in frame.columns if c not in VOLATILE]
            out[t] = frame[keep].sort_values(keep, kind="stable").reset_index(drop=True)
        return out
    finally:
        conn.close()


def test_a_batch_computed_inside_a_range_equals_the_batch_computed_alone(tiny_fleet, tmp_path):
    env = {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_BATCHES": "3",
        "CAPACITY_THRESHOLD": "60",
    }
    (tmp_path / "range").mkdir()
    (tmp_path / "alone").mkdir()
    together = {
        **env,
        "CAPACITY_DB": str(tmp_path / "range" / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "range" / "h"),
    }
    out = run(["run", "--workers", "1"], tmp_path / "range", together)
    assert "batch_00..batch_02: ok" in out, out  # one run covered all three
    alone = {
        **env,
        "CAPACITY_DB": str(tmp_path / "alone" / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "alone" / "h"),
    }
    for batch in ("batch_00", "batch_01", "batch_02"):
        assert f"{batch}: ok" in run(
            ["run", "--workers", "1", "--batch", batch], tmp_path / "alone", alone
        )
    a, b = tables(together["CAPACITY_DB"]), tables(alone["CAPACITY_DB"])
    for t in TABLES:
        assert len(a[t]) == len(b[t]), t
        if t != "skipped_series":
            assert len(a[t]) > 0, t
        # the challenger's trees differ by ~1e-4 between identical runs; everything else is exact
        pd.testing.assert_frame_equal(
            a[t], b[t], check_dtype=False, check_exact=False, atol=1e-3, rtol=0, obj=t
        )


# --- failure isolation, on the real IO manager and a real Dagster run of two small assets ----------

PARTS = dg.StaticPartitionsDefinition(["b0", "b1", "b2"])
COLUMNS = {"batch": "string", "v": "int64"}
BROKEN: set[str] = set()
GENERATION = [0]  # what this run writes, so a test can tell whose rows a table holds


@dg.asset(
    partitions_def=PARTS,
    backfill_policy=dg.BackfillPolicy.multi_run(3),
    metadata={"partition_expr": "batch"},
)
def first(context: dg.AssetExecutionContext) -> pd.DataFrame:
    def compute(batch):
        if batch in BROKEN:
            raise ValueError(f"cannot read {batch}")
        return conform(pd.DataFrame({"batch": [batch], "v": [GENERATION[0]]}), COLUMNS)

    return each_batch(context, "first", {}, lambda batch: compute(batch), COLUMNS)


@dg.asset(
    partitions_def=PARTS,
    backfill_policy=dg.BackfillPolicy.multi_run(3),
    metadata={"partition_expr": "batch"},
)
def second(context: dg.AssetExecutionContext, first: pd.DataFrame):
    rows = each_batch(
        context,
        "second",
        {"first": first},
        lambda batch, first: first.assign(v=first["v"] * 10),
        COLUMNS,
    )
    yield dg.Output(rows)
    failed = dict(rows.attrs["capacity_failed_batches"])
    if failed:
        raise dg.Failure("failed: " + ", ".join(f"{b} ({why})" for b, why in failed.items()))


def materialise(db: str, first_key: str, last_key: str):
    GENERATION[0] += 1
    job = dg.define_asset_job("j", selection=[first, second])
    defs = dg.Definitions(
        assets=[first, second],
        jobs=[job],
        resources={"io_manager": CapacityDuckDBIOManager(database=db, schema="main")},
    )
    return defs.resolve_job_def("j").execute_in_process(
        tags={
            "dagster/asset_partition_range_start": first_key,
            "dagster/asset_partition_range_end": last_key,
        },
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )


def values(db: str, table: str) -> dict:
    conn = duckdb.connect(db, read_only=True)
    try:
        return dict(conn.execute(f"select batch, v from {table} order by batch").fetchall())
    finally:
        conn.close()


@pytest.fixture
def clean_faults():
    GENERATION[0] = 0
    yield
    BROKEN.clear()


def test_a_failing_batch_costs_the_others_nothing_and_is_repaired_alone(tmp_path, clean_faults):
    db = str(tmp_path / "db.duckdb")
    assert materialise(db, "b0", "b2").success
    assert values(db, "second") == {"b0": 10, "b1": 10, "b2": 10}
    BROKEN.add("b1")
    result = materialise(db, "b0", "b2")
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert (
        failure
        and "b1 (first: ValueError: cannot read b1)" in failure[0].step_failure_data.error.message
    )
    # b0 and b2 were published from this run (v = 2 * 10), b1 kept its previous complete results
    assert values(db, "first") == {"b0": 2, "b1": 1, "b2": 2}
    assert values(db, "second") == {"b0": 20, "b1": 10, "b2": 20}
    BROKEN.clear()
    assert materialise(db, "b1", "b1").success  # only the failed batch again
    assert values(db, "second") == {"b0": 20, "b1": 30, "b2": 20}


def test_a_large_fleet_gets_more_smaller_ranges_and_a_small_one_a_range_per_worker():
    """A run holds its batches' inputs at once: past CAPACITY_SERVERS_PER_RUN servers a range is cut
    smaller (memory per process stays bounded), below it each worker gets one range (the per-run cost once)."""
    from capacity_assets.config import CapacitySettings
    from capacity_assets.pipeline.runner import plan_ranges

    SERVERS_PER_RUN = CapacitySettings().servers_per_run  # the default, 500
    limit = {"servers_per_run": SERVERS_PER_RUN}

    keys = ["batch_00", "batch_01", "batch_02"]
    assert plan_ranges(keys, 2, **limit) == [["batch_00", "batch_01"], ["batch_02"]]
    assert plan_ranges(keys, 2, servers=SERVERS_PER_RUN, **limit) == [
        ["batch_00", "batch_01"],
        ["batch_02"],
    ]
    assert plan_ranges(keys, 2, servers=3 * SERVERS_PER_RUN, **limit) == [
        ["batch_00"],
        ["batch_01"],
        ["batch_02"],
    ]
    assert plan_ranges(keys, 1, servers=2 * SERVERS_PER_RUN, **limit) == [
        ["batch_00"],
        ["batch_01"],
        ["batch_02"],
    ]
    assert plan_ranges(keys, 1, servers=SERVERS_PER_RUN, **limit) == [
        ["batch_00", "batch_01", "batch_02"]
    ]
    # a deployment with less memory per process
    assert plan_ranges(keys, 2, servers=SERVERS_PER_RUN, servers_per_run=100) == [
        ["batch_00"],
        ["batch_01"],
        ["batch_02"],
    ]


def test_a_worker_runs_under_the_settings_of_the_moment_it_is_given_work(tmp_path, monkeypatch):
    """Workers fork from a server started once (it holds the heavy imports); `capacity demo --weeks`
    points CAPACITY_METRICS at each week in turn, and each week's runs must read that week's files."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from capacity_assets.pipeline.runner import run_in, worker_context

    monkeypatch.setenv("CAPACITY_METRICS", "week1/*.parquet")
    with ProcessPoolExecutor(max_workers=1, mp_context=worker_context()) as pool:
        pool.submit(os.getpid).result()  # the fork server runs from here on (if it did not already)
    monkeypatch.setenv("CAPACITY_METRICS", "week2/*.parquet")
    monkeypatch.chdir(tmp_path)
    with ProcessPoolExecutor(max_workers=1, mp_context=worker_context()) as pool:
        # the fork server keeps the environment it started with: a bare worker would not see week 2
        assert pool.submit(os.getenv, "CAPACITY_METRICS").result() != "week2/*.parquet"
        env, cwd = dict(os.environ), os.getcwd()
        assert (
            pool.submit(run_in, env, cwd, os.getenv, "CAPACITY_METRICS").result()
            == "week2/*.parquet"
        )
        assert pool.submit(run_in, env, cwd, os.getcwd).result() == str(tmp_path)


def test_one_worker_runs_a_fleet_cut_for_memory_in_a_fresh_process_per_range(
    tiny_fleet, tmp_path, monkeypatch
):
    """`capacity run --workers 1` on a fleet too large for one run: each range runs in its own fresh
    process, never in the command's, where what one range leaves allocated adds to the next's peak."""
    import os
    import re

    from capacity_assets.pipeline import runner
    from capacity_assets.pipeline.instance import get_instance

    for name, value in {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    with (
        monkeypatch.context() as elsewhere
    ):  # a fork server started under other settings (if none runs yet)
        elsewhere.setenv("CAPACITY_DB", str(tmp_path / "elsewhere" / "wrong.duckdb"))
        elsewhere.setenv("CAPACITY_METRICS", str(tmp_path / "elsewhere" / "*.csv"))
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=runner.worker_context()) as pool:
            pool.submit(os.getpid).result()
    keys = ["batch_00", "batch_01", "batch_02"]
    assert runner.run_job("capacity_hierarchy")[0].success
    lines = []
    # at most 2 servers a run: the 6-server fleet needs three runs
    outcome = runner.run_batches(keys, 1, echo=lines.append, servers=6, servers_per_run=2)
    assert not outcome.failed and len(lines) == 3, lines
    pids = set()
    for run_id in {b.run_id for b in outcome.batches}:
        for event in get_instance().all_logs(run_id):
            found = re.search(
                r"Executing steps in process \(pid: (\d+)\)", event.user_message or ""
            )
            if found:
                pids.add(int(found.group(1)))
    assert len(pids) == 3 and os.getpid() not in pids
    assert not (tmp_path / "elsewhere").exists()  # every run read and wrote this test's files


def test_without_a_fork_server_workers_are_spawned_and_still_get_the_callers_settings(
    tmp_path, monkeypatch
):
    """Windows has no fork server: `capacity run` must still start its workers there."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from capacity_assets.pipeline.runner import run_in, worker_context

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    ctx = worker_context()
    assert ctx.get_start_method() == "spawn"
    monkeypatch.setenv("CAPACITY_METRICS", "week3/*.parquet")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        assert (
            pool.submit(
                run_in, dict(os.environ), str(tmp_path), os.getenv, "CAPACITY_METRICS"
            ).result()
            == "week3/*.parquet"
        )


def test_capacity_ui_sizes_a_backfills_runs_by_the_fleet_as_capacity_run_does(
    tiny_fleet, tmp_path, monkeypatch, capsys
):
    """A UI backfill's runs are cut by the backfill policy, fixed when the definitions load: `capacity
    ui` counts the fleet first and sets CAPACITY_BATCHES_PER_RUN, so no run of a large fleet holds more
    servers than `capacity run` would give one (memory); an explicit value is left alone."""
    import os
    import subprocess
    import sys

    from capacity_assets.cli.main import _size_ui_runs
    from capacity_assets.config import CapacitySettings

    for name, value in {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
        "CAPACITY_BATCHES": "3",
        "CAPACITY_SERVERS_PER_RUN": "2",
    }.items():  # 6 servers: one batch of about 2 a run
        monkeypatch.setenv(name, value)
    # set, not deleted, so monkeypatch undoes what _size_ui_runs writes to os.environ itself
    monkeypatch.setenv("CAPACITY_BATCHES_PER_RUN", "")
    monkeypatch.chdir(tmp_path)
    _size_ui_runs(CapacitySettings.from_env())
    assert os.environ["CAPACITY_BATCHES_PER_RUN"] == "1"
    assert (
        "a UI backfill runs 1 batch(es) per run (6 servers in 3 batches; at most 2 servers a run)"
        in capsys.readouterr().out
    )
    # the code server `dagster dev` starts inherits it: the backfill policy the UI's backfills follow
    policy = subprocess.run(
        [
            sys.executable,
            "-c",
            "from capacity_assets.config import load; from capacity_assets.pipeline.partitions import layout; "
            "print(layout(load()).backfill.max_partitions_per_run)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert policy.stdout.strip() == "1"
    monkeypatch.setenv("CAPACITY_BATCHES_PER_RUN", "3")  # the user's own choice wins
    _size_ui_runs(CapacitySettings.from_env())
    assert os.environ["CAPACITY_BATCHES_PER_RUN"] == "3"
    monkeypatch.setenv(
        "CAPACITY_SERVERS_PER_RUN", "500"
    )  # a small fleet: one range per core, as before
    monkeypatch.delenv("CAPACITY_BATCHES_PER_RUN")
    _size_ui_runs(CapacitySettings.from_env())
    assert os.environ["CAPACITY_BATCHES_PER_RUN"] == str(-(-3 // (os.cpu_count() or 1)))
