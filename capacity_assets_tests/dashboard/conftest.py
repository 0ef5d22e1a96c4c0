"""A database with a track record: `capacity demo --weeks 3` on the tiny fleet, three weekly runs of the
real pipeline into one file, so forecast_history keeps 3 vintages and forecast_accuracy, risk_calls and
risk_resolved fill.

The replay costs a minute and a half or more on 2 cores, so it starts in the background when the first
dashboard test is set up and runs alongside the tests on the single-run database (``tiny_run``, built
meanwhile); ``track_db`` waits for it only when a Track record test needs it. A session that needs no
track_db (``-k`` on other tests) kills it at the end.

``postgres_server`` (capacity_assets_tests/servers.py) is a PostgreSQL server for the tests that read
the same tables from PostgreSQL (test_dashboard_postgres.py); started only when one asks for it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from capacity_assets_tests.conftest import BIN, TINY
from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture (PostgreSQL tests)

WEEKS = 3


@pytest.fixture(scope="session", autouse=True)
def _track_replay(tmp_path_factory):
    """Starts the replay (a process group of our own, killed at the end if still running)."""
    work = tmp_path_factory.mktemp("track")
    env = {
        **os.environ,
        "CAPACITY_BATCHES": "2",
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    for name in ("CAPACITY_METRICS", "CAPACITY_HIERARCHY"):
        env.pop(name, None)
    log = open(work / "demo.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "capacity"),
            "demo",
            "--servers",
            str(TINY["servers"]),
            "--months",
            str(TINY["months"]),
            "--seed",
            str(TINY["seed"]),
            "--weeks",
            str(WEEKS),
            "--out",
            str(work / "demo"),
        ],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    replay = {"proc": proc, "work": work, "env": env, "log": work / "demo.log"}
    try:
        yield replay
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="session")
def track_db(_track_replay) -> dict:
    """The replayed database (``db``) once the replay has finished, and its output (``log``)."""
    proc, work = _track_replay["proc"], _track_replay["work"]
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 15)
        raise AssertionError(
            f"capacity demo --weeks {WEEKS} did not finish in 600 s:\n"
            + _track_replay["log"].read_text()[-4000:]
        ) from None
    log = _track_replay["log"].read_text()
    if proc.returncode != 0:
        raise AssertionError(
            f"capacity demo --weeks {WEEKS} exited {proc.returncode}:\n{log[-4000:]}"
        )
    assert len(list((work / "demo" / "weeks").glob("*/metrics.parquet"))) == WEEKS, log[-4000:]
    return {"db": _track_replay["env"]["CAPACITY_DB"], "log": log}
