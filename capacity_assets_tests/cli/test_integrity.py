"""Integrity of the golden record, end to end with real runs: the batch ledger, runs launched outside
`capacity run`, two runs of one batch at once, a run killed while staging, hierarchy versions,
per-batch freshness and the settings a result was made with.

Every test runs against both stores (``store``: a DuckDB file, a PostgreSQL database), since what
is under test is the store's staging and publish protocol, which each implements in its own way.
One small fleet is published once per store (threshold 50 %, so every batch has risk rows, and the
hierarchy given as a folder); tests that change or break things work on their own copy of its
database. A published run costs real seconds, so a slow test whose subject is not the store runs
on DuckDB only (``duckdb_only``).
"""

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from capacity_assets.inputs.batching import batch_of
from capacity_assets.store import postgres
from capacity_assets.store.db import connect, db_lock, is_postgres, reading, table_exists, writing
from capacity_assets_tests.conftest import BIN, capacity

BATCHES = 3
KEYS = [f"batch_{i:02d}" for i in range(BATCHES)]
TABLES = [
    "processed_data",
    "skipped_series",
    "prophet_results",
    "challenger_results",
    "champions",
    "forecasts",
    "risk_exceptions",
    "batch_ledger",
]
STORES = ["duckdb", "postgres"]
# the module's published run is made once per store: a test on one store only says so here
duckdb_only = pytest.mark.parametrize("store", ["duckdb"], indirect=True)


def new_store(kind: str, folder: Path, request) -> str:
    """An empty store: a .duckdb path in ``folder``, or a fresh database's URL (the server is asked
    for only here, so the DuckDB variants run, and PostgreSQL's skip, where it is not installed)."""
    if kind == "duckdb":
        return str(folder / "cap.duckdb")
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(scope="module", params=STORES)
def store(request, tmp_path_factory) -> str:
    """The store the module's published run writes to."""
    return new_store(request.param, tmp_path_factory.mktemp("store"), request)


def sql(db: str, statement: str, params=None) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement, params or [])


def ordered(db: str, statement: str, params=None) -> pd.DataFrame:
    """``statement``'s rows sorted by every column (DuckDB's ``order by all``, on either store)."""
    frame = sql(db, statement, params)
    return frame.sort_values(list(frame.columns), ignore_index=True) if len(frame) else frame


def snapshot(db: str, batch: str) -> dict[str, pd.DataFrame]:
    return {t: ordered(db, f"select * from {t} where batch = ?", [batch]) for t in TABLES}


def write_hierarchy(folder: Path, servers: list[str], suffix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "server_id": servers,
            "department": [f"Dept {i % 2} {suffix}" for i in range(len(servers))],
            "app_manager": [f"Manager {i} {suffix}" for i in range(len(servers))],
        }
    ).to_csv(folder / "owners.csv", index=False)


@pytest.fixture(scope="module")
def published(store, tmp_path_factory) -> dict:
    from capacity_assets.demo.fleet import write_fleet

    work = tmp_path_factory.mktemp("integrity")
    fleet = write_fleet(work / "in", servers=6, months=11, seed=5)
    servers = sorted(pd.read_csv(fleet["hierarchy"])["server_id"].astype(str))
    write_hierarchy(work / "owners", servers, "v1")
    env = {
        "CAPACITY_METRICS": fleet["metrics"],
        "CAPACITY_HIERARCHY": str(work / "owners"),
        "CAPACITY_DB": store,
        "CAPACITY_BATCHES": str(BATCHES),
        "CAPACITY_THRESHOLD": "50",
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    capacity("run", cwd=work, env=env)
    return {"work": work, "env": env, "db": env["CAPACITY_DB"], "servers": servers, "fleet": fleet}


def clone_database(url: str, timeout: float = 30) -> str:
    """A new PostgreSQL database with ``url``'s contents (its template), as a file is copied."""
    import psycopg

    server, name = url.rsplit("/", 1)
    copy = f"t_{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        while True:
            try:
                conn.execute(f'create database "{copy}" template "{name}"')
                return f"{server}/{copy}"
            except psycopg.errors.ObjectInUse:  # a session of the last reader is still closing
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def copy_of(published, tmp_path) -> dict:
    """The published database in a fresh work folder with a fresh Dagster instance."""
    if is_postgres(published["db"]):
        db = clone_database(published["db"])
    else:
        db = str(tmp_path / "cap.duckdb")
        shutil.copy(published["db"], db)
    (tmp_path / ".dagster").mkdir()
    env = {**published["env"], "CAPACITY_DB": db, "DAGSTER_HOME": str(tmp_path / ".dagster")}
    return {"work": tmp_path, "env": env, "db": db}


def age_batches(db: str, tables: tuple[str, ...] = ("batch_ledger",)) -> None:
    """Every batch but batch_00 published (and generated) 20 days ago, through the store's writer."""
    column = {"batch_ledger": "published_at", "forecasts": "generated_at"}
    with writing(db) as conn:
        for t in tables:
            c = column[t]
            conn.execute(
                f"update {t} set {c} = {c} - interval '20 days' where batch <> 'batch_00'"
            ).fetchall()


def start(args, cwd, env) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "capacity"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def staged_rows(db: str, batch: str) -> int:
    """Manifest rows of ``batch`` in staging: tables a run staged and has not published."""
    with reading(db) as conn:
        if not table_exists(conn, "staging", "_writes"):
            return 0
        return conn.execute(
            "select count(*) from staging._writes where batch = ?", [batch]
        ).fetchone()[0]


def wait_until_staged(db: str, batch: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until a run has staged (not published) at least one table of ``batch``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before staging anything:\n{proc.stdout.read()}"
        if staged_rows(db, batch):
            return
        time.sleep(0.05)
    raise AssertionError("the run staged nothing in time")


def sessions_in_transaction(db: str) -> list[tuple]:
    """Other client sessions on PostgreSQL database ``db`` that are inside a transaction."""
    with reading(db) as conn:
        return conn.execute(
            "select pid, state, query from pg_stat_activity where datname = current_database() "
            "and backend_type = 'client backend' and pid <> pg_backend_pid() "
            "and xact_start is not null"
        ).fetchall()


@contextmanager
def frozen(db: str, proc: subprocess.Popen, timeout: float = 120):
    """``proc``'s process group stopped while it holds nothing of the store, resumed on exit.

    Stopped inside a transaction it would hold locks the other run then waits for forever. DuckDB:
    stopped under the file's lock, which a run holds for every read and write. PostgreSQL has no
    such lock: stopped, and let go on to try again while one of its sessions is in a transaction.
    """
    try:
        if not is_postgres(db):
            with db_lock(db):
                os.killpg(proc.pid, signal.SIGSTOP)
        else:
            deadline = time.monotonic() + timeout
            while True:
                os.killpg(proc.pid, signal.SIGSTOP)
                time.sleep(0.3)  # what it sent just before it stopped has reached the server
                busy = sessions_in_transaction(db)
                if not busy:
                    break
                os.killpg(proc.pid, signal.SIGCONT)
                assert time.monotonic() < deadline, f"the run was always in a transaction: {busy}"
                time.sleep(0.05)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


# --- 1. the ledger --------------------------------------------------------------------------------


def test_every_batch_has_one_ledger_row_published_with_its_tables(published):
    from capacity_assets.config import CapacitySettings
    from capacity_assets.inputs import files, fingerprint
    from capacity_assets.store.ledger import hierarchy_version

    db = published["db"]
    book = sql(db, "select * from batch_ledger order by batch")
    assert list(book["batch"]) == KEYS
    runs = sql(
        db,
        "select batch, min(run_id) r, max(run_id) r2, count(distinct (server_id, resource)) n, "
        'count(*) as "rows" from forecasts group by 1 order by 1',
    )
    assert (runs["r"] == runs["r2"]).all() and list(runs["r"]) == list(book["run_id"])
    assert list(book["series"]) == list(runs["n"]) and list(book["rows"]) == list(runs["rows"])
    settings = CapacitySettings(
        metrics=published["env"]["CAPACITY_METRICS"],
        hierarchy=published["env"]["CAPACITY_HIERARCHY"],
        batches=BATCHES,
        threshold=50.0,
    )
    conn = duckdb.connect()
    expected = fingerprint.batch_fingerprints(
        conn, files.inspect_metrics(conn, settings.metrics), settings
    )
    assert dict(zip(book["batch"], book["fingerprint"])) == expected
    assert {json.loads(s)["threshold"] for s in book["settings"]} == {50.0}
    assert set(book["hierarchy_version"]) == {
        hierarchy_version(sql(db, "select * from business_hierarchy"))
    }


def test_a_batch_materialised_outside_capacity_run_is_recognised_and_not_recomputed(
    published, tmp_path
):
    w = copy_of(published, tmp_path)
    before = sql(w["db"], "select batch, run_id from batch_ledger order by batch")
    # what a UI backfill or the schedule does: a plain Dagster run of the job for one partition
    code = (
        "from dagster import DagsterInstance\nfrom capacity_assets.pipeline.definitions import build_defs\n"
        "r = build_defs().resolve_job_def('capacity_forecast').execute_in_process(partition_key='batch_01', "
        "instance=DagsterInstance.get())\nassert r.success"
    )
    proc = subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=w["work"],
        env={**os.environ, **w["env"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = sql(w["db"], "select batch, run_id from batch_ledger order by batch")
    assert (
        after.loc[1, "run_id"] != before.loc[1, "run_id"]
        and after.loc[0, "run_id"] == before.loc[0, "run_id"]
    )
    out = capacity("run", cwd=w["work"], env=w["env"]).stdout
    assert f"{BATCHES} batch(es) unchanged since they were last published" in out, out
    assert sql(w["db"], "select batch, run_id from batch_ledger order by batch").equals(after)


@duckdb_only  # 70 s more on PostgreSQL, and hierarchy versions are the ledger's, not the store's
def test_changing_the_hierarchy_folder_re_runs_and_owners_match_each_batchs_ledger(
    published, tmp_path
):
    from capacity_assets.store.ledger import hierarchy_version

    w = copy_of(published, tmp_path)
    folder = tmp_path / "owners"
    write_hierarchy(folder, published["servers"], "v2")
    env = {**w["env"], "CAPACITY_HIERARCHY": str(folder)}
    old_version = sql(w["db"], "select distinct hierarchy_version v from batch_ledger")[
        "v"
    ].tolist()
    # only batch_00 runs (as if the others had failed): the hierarchy table is v2 from now on
    out = capacity("run", "--workers", "1", "--batch", "batch_00", cwd=w["work"], env=env).stdout
    assert "unchanged" not in out
    v2 = hierarchy_version(sql(w["db"], "select * from business_hierarchy"))
    book = sql(w["db"], "select batch, hierarchy_version from batch_ledger order by batch")
    assert dict(zip(book["batch"], book["hierarchy_version"])) == {
        "batch_00": v2,
        "batch_01": old_version[0],
        "batch_02": old_version[0],
    }
    risk = sql(w["db"], "select batch, app_manager from risk_exceptions")
    assert set(risk["batch"]) == set(KEYS), "every batch needs risk rows for this test"
    for batch, managers in risk.groupby("batch")["app_manager"]:
        suffix = "v2" if batch == "batch_00" else "v1"
        assert all(m.endswith(suffix) for m in managers), (batch, set(managers))
    # and the next full run redoes exactly the batches made from the older hierarchy
    out = capacity("run", cwd=w["work"], env=env).stdout
    assert "1 batch(es) unchanged" in out, out
    assert set(sql(w["db"], "select distinct hierarchy_version v from batch_ledger")["v"]) == {v2}


# --- 2. two runs of one batch at once ---------------------------------------------------------------


def test_two_runs_of_one_batch_give_one_publication_and_the_overtaken_run_fails(
    published, tmp_path
):
    w = copy_of(published, tmp_path)
    first = start(["run", "--batch", "batch_02", "--force", "--workers", "1"], w["work"], w["env"])
    wait_until_staged(w["db"], "batch_02", first)
    with frozen(w["db"], first):
        # its own Dagster instance: the frozen run may be stopped inside a write to the instance's
        # SQLite event log, a lock no live run holds for more than milliseconds (the race under test
        # is on the store, which both share)
        (w["work"] / ".dagster_second").mkdir()
        second = capacity(
            "run",
            "--batch",
            "batch_02",
            "--force",
            "--workers",
            "1",
            cwd=w["work"],
            env={**w["env"], "DAGSTER_HOME": str(w["work"] / ".dagster_second")},
        )
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1, out
    assert "superseded by run" in out and "published nothing" in out, out
    assert "batch_02: ok" in second.stdout
    book = sql(w["db"], "select run_id from batch_ledger where batch = 'batch_02'")[
        "run_id"
    ].tolist()
    published_runs = set(
        sql(w["db"], "select distinct run_id from forecasts where batch = 'batch_02'")["run_id"]
    )
    assert published_runs == set(book) and len(book) == 1
    series = sql(w["db"], "select series from batch_ledger where batch = 'batch_02'")["series"][0]
    for table in ("prophet_results", "challenger_results", "champions", "forecasts"):
        n = sql(
            w["db"],
            f"select count(distinct (server_id, resource)) n from {table} where batch = 'batch_02'",
        )["n"][0]
        assert n == series > 0, table


# --- 3. killed while staging ------------------------------------------------------------------------


def test_a_run_killed_while_staging_keeps_the_previous_results_and_the_next_run_repairs(
    published, tmp_path
):
    w = copy_of(published, tmp_path)
    target = "batch_00"
    before = snapshot(w["db"], target)
    # new input for one server of the batch, so the interrupted run had something to change
    server = next(s for s in published["servers"] if batch_of(s, BATCHES) == target)
    metrics = tmp_path / "metrics"
    shutil.copytree(
        Path(published["fleet"]["metrics"]).parent, metrics
    )  # the fleet's metrics are a glob
    last = pd.Timestamp(before["processed_data"]["ds"].max())
    pd.DataFrame(
        {
            "server_id": [server],
            "resource": ["cpu"],
            "timestamp": [last + pd.Timedelta(days=1)],
            "utilization_pct": [99.0],
        }
    ).to_parquet(metrics / "late.parquet")
    env = {**w["env"], "CAPACITY_METRICS": str(metrics)}
    run = start(["run", "--batch", target, "--workers", "1"], w["work"], env)
    wait_until_staged(w["db"], target, run)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert staged_rows(w["db"], target), "not killed mid-staging"
    after = snapshot(w["db"], target)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], before[t], obj=t)
    out = capacity("run", "--batch", target, "--workers", "1", cwd=w["work"], env=env).stdout
    assert "unchanged" not in out
    repaired = snapshot(w["db"], target)
    assert repaired["batch_ledger"]["run_id"][0] != before["batch_ledger"]["run_id"][0]
    assert pd.Timestamp(repaired["processed_data"]["ds"].max()) == last + pd.Timedelta(days=1)
    assert set(repaired["forecasts"]["run_id"]) == set(repaired["batch_ledger"]["run_id"])
    assert staged_rows(w["db"], target) == 0


def test_re_materialising_one_batch_replaces_exactly_its_rows(published, tmp_path):
    w = copy_of(published, tmp_path)
    target = "batch_01"
    before = {t: ordered(w["db"], f"select * from {t}") for t in TABLES}
    capacity("run", "--batch", target, "--force", "--workers", "1", cwd=w["work"], env=w["env"])
    for t in TABLES:
        after = ordered(w["db"], f"select * from {t}")
        assert len(after) == len(before[t]) > 0, t
        other_b, other_a = before[t][before[t]["batch"] != target], after[after["batch"] != target]
        pd.testing.assert_frame_equal(
            other_a.reset_index(drop=True), other_b.reset_index(drop=True), check_dtype=False
        )
        keep = [c for c in after.columns if c not in ("run_id", "generated_at", "published_at")]
        mine_b = before[t][before[t]["batch"] == target][keep].reset_index(drop=True)
        mine_a = after[after["batch"] == target][keep].reset_index(drop=True)
        assert len(mine_a) > 0 or t == "skipped_series"
        pd.testing.assert_frame_equal(
            mine_a, mine_b, check_dtype=False, check_exact=False, atol=1e-3, rtol=0
        )
    runs_before = before["batch_ledger"].set_index("batch")["run_id"]
    runs_after = sql(w["db"], "select batch, run_id from batch_ledger").set_index("batch")["run_id"]
    assert (
        runs_after[target] != runs_before[target]
        and runs_after["batch_00"] == runs_before["batch_00"]
    )


# --- 6 and 7. freshness per batch, and the settings a result was made with --------------------------


@pytest.mark.parametrize("kind", STORES)
def test_the_freshness_check_on_a_database_where_nothing_was_published_names_every_batch(
    tmp_path, kind, request
):
    """The first run failed everywhere, or the check runs from the UI before any run: the check must
    fail naming every batch as never published, not crash on the missing ledger."""
    env = {
        **os.environ,
        "CAPACITY_DB": new_store(kind, tmp_path, request),
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
    }
    (tmp_path / ".dagster").mkdir()
    code = (
        "from dagster import DagsterInstance\nfrom capacity_assets.pipeline.definitions import build_defs\n"
        "r = build_defs().resolve_job_def('capacity_freshness').execute_in_process(\n"
        "    instance=DagsterInstance.get(), "
        "raise_on_error=False)\n"
        "[e] = r.get_asset_check_evaluations()\nprint(r.success, e.passed, e.description)"
    )
    proc = subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("True False 3 of 3 batches are not fresh"), proc.stdout
    assert all(f"batch_0{i}: never published" in proc.stdout for i in range(3)), proc.stdout


def test_one_fresh_batch_does_not_make_stale_ones_look_fresh(published, tmp_path):
    from streamlit.testing.v1 import AppTest

    w = copy_of(published, tmp_path)
    age_batches(w["db"], ("batch_ledger", "forecasts"))
    code = (
        "from dagster import DagsterInstance\nfrom capacity_assets.pipeline.definitions import build_defs\n"
        "r = build_defs().resolve_job_def('capacity_freshness').execute_in_process(\n"
        "    instance=DagsterInstance.get(), "
        "raise_on_error=False)\n"
        "[e] = r.get_asset_check_evaluations()\nprint(e.passed, e.description)"
    )
    proc = subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=w["work"],
        env={**os.environ, **w["env"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        proc.stdout.startswith("False") and "batch_01" in proc.stdout and "batch_02" in proc.stdout
    )
    assert "batch_00" not in proc.stdout
    app = str(Path(__file__).resolve().parents[2] / "capacity_assets" / "dashboard" / "app.py")
    old = {k: os.environ.get(k) for k in ("CAPACITY_DB", "CAPACITY_THRESHOLD")}
    os.environ["CAPACITY_DB"] = w["db"]
    os.environ.pop("CAPACITY_THRESHOLD", None)  # the viewer's default is 95; the run used 50
    try:
        at = AppTest.from_file(app, default_timeout=60).run()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert not at.exception
    warnings = " ".join(x.value for x in at.warning)
    assert "Data is stale" in warnings and ("batch\\_01" in warnings or "batch\\_02" in warnings), (
        warnings
    )
    assert not any("fresh" in x.value for x in at.success)
    assert any(c.value.startswith("Threshold 50 %") for c in at.caption), [
        c.value for c in at.caption
    ]


def test_a_run_with_nothing_to_do_still_checks_freshness_for_the_ui(published, tmp_path):
    """Batches go stale while nothing changes: the UI's freshness check must say so after a
    `capacity run` that skipped every batch, as the run's summary does."""
    from dagster import DagsterEventType, DagsterInstance

    w = copy_of(published, tmp_path)
    age_batches(w["db"])
    out = capacity("run", cwd=w["work"], env=w["env"]).stdout
    assert f"{BATCHES} batch(es) unchanged" in out and "NOT FRESH" in out, out
    with DagsterInstance.from_config(w["env"]["DAGSTER_HOME"]) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "capacity_freshness"]
        assert len(runs) == 1, [r.job_name for r in instance.get_runs()]
        [check] = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                runs[0].run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            )
        ]
    assert not check.passed and "batch_01" in check.description and "batch_02" in check.description
    assert "batch_00" not in check.description


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_an_interrupted_run_exits_130_and_keeps_the_previous_results(published, tmp_path, how):
    """Ctrl-C (SIGINT to the terminal's process group) or SIGTERM to the command (systemd, a cron
    timeout) while a batch runs in the command's own process: Dagster turned the signal into a failed
    step, so the command went on and exited 1 as if a batch had failed."""
    w = copy_of(published, tmp_path)
    target = "batch_01"
    before = snapshot(w["db"], target)
    run = start(["run", "--batch", target, "--workers", "1", "--force"], w["work"], w["env"])
    wait_until_staged(w["db"], target, run)
    if how == "ctrl_c":
        os.killpg(run.pid, signal.SIGINT)
    else:
        os.kill(run.pid, signal.SIGTERM)
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 130, out[-3000:]
    assert "capacity: error: interrupted: batches that finished are published whole" in out
    after = snapshot(w["db"], target)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], before[t], obj=t)


@contextmanager
def batch_held(db: str, batch: str):
    """``batch`` held as a run publishing it holds it, so a run writing it waits in a store call:
    DuckDB the file's lock, PostgreSQL the batch's advisory lock (yields: is the run waiting?)."""
    if not is_postgres(db):
        with db_lock(db):  # a read of ours would now wait for ourselves: the run's state is unseen
            yield lambda: True
        return
    conn = connect(db)
    try:
        conn.execute(
            "select pg_advisory_lock(hashtextextended(?, 0))", [postgres.BATCH_LOCK + batch]
        )

        def waiting() -> bool:
            with reading(db) as c:
                return c.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and query like '%pg_advisory_xact_lock%'"
                ).fetchone()[0]

        yield waiting
    finally:
        conn.close()


def test_ctrl_c_while_a_run_waits_for_the_store_exits_130(published, tmp_path):
    """Ctrl-C lands wherever the run is, and on PostgreSQL it is often inside a driver call: the
    signal must still stop the run with exit 130 and leave the batch as it was. Made certain here
    by holding the batch, so the run waits for it when the signal comes."""
    w = copy_of(published, tmp_path)
    target = "batch_01"
    before = snapshot(w["db"], target)
    run = start(["run", "--batch", target, "--workers", "1", "--force"], w["work"], w["env"])
    wait_until_staged(w["db"], target, run)
    with batch_held(w["db"], target) as waiting:
        deadline = time.monotonic() + 120
        while not waiting():
            assert run.poll() is None and time.monotonic() < deadline, "the run never waited"
            time.sleep(0.05)
        time.sleep(0.5)  # DuckDB: its wait is unseen; by now it waits or fits, either will do
        os.killpg(run.pid, signal.SIGINT)
        time.sleep(0.5)  # delivered while the batch is still held
    out = run.communicate(timeout=120)[0]
    assert run.returncode == 130, out[-3000:]
    after = snapshot(w["db"], target)
    for t in TABLES:
        pd.testing.assert_frame_equal(after[t], before[t], obj=t)
