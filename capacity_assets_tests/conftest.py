"""Shared fixtures: a tiny real fleet and a tiny real pipeline run, made once per session.

Partitions are fixed when the definitions load, so the batch count is set here, before any
capacity_assets module is imported by a test.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capacity_assets_tests.pools_run import pooled_run  # noqa: F401 - a fixture (pools, dashboard)

os.environ["CAPACITY_BATCHES"] = "3"
os.environ.pop("CAPACITY_METRICS", None)
os.environ.pop("CAPACITY_HIERARCHY", None)

TINY = {"servers": 6, "months": 12, "seed": 0}
# What the tiny fleet (seed 0) is known to hold, so tests can assert on it instead of skipping when a
# table happens to be empty: one server whose disk trend crosses 95 % about 40 days after the last
# history day (-> a critical row in risk_exceptions), and one brand-new server whose ~70 days of
# history are too short to forecast (-> its 4 series in skipped_series).
TINY_SATURATING = ("app-prd-00003", "disk")
TINY_NEW_SERVER = "file-dev-00001"
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _settings_do_not_leak():
    """A test that leaves a CAPACITY_* setting in os.environ changes every later test in its worker
    (a leaked CAPACITY_BATCHES_PER_RUN once split a UI backfill into one run more): fail it."""
    before = {k: v for k, v in os.environ.items() if k.startswith("CAPACITY_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("CAPACITY_")}
    assert after == before, (
        f"the test left its settings behind: {set(after.items()) ^ set(before.items())}"
    )


def capacity(*args, cwd, env=None, timeout=600, check=True):
    """Run the real `capacity` console script; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(BIN / "capacity"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"capacity {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_fleet(tmp_path_factory) -> dict:
    """A 6-server, 12-month demo fleet written as Parquet + hierarchy CSV (see TINY_SATURATING)."""
    from capacity_assets.demo.fleet import write_fleet

    out = tmp_path_factory.mktemp("fleet")
    return write_fleet(out, servers=TINY["servers"], months=TINY["months"], seed=TINY["seed"])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_fleet) -> dict:
    """The whole graph run once through `capacity run` on the tiny fleet; returns paths and output."""
    work = tmp_path_factory.mktemp("run")
    env = {
        "CAPACITY_METRICS": tiny_fleet["metrics"],
        "CAPACITY_HIERARCHY": tiny_fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    proc = capacity("run", cwd=work, env=env)
    return {
        "db": env["CAPACITY_DB"],
        "env": env,
        "cwd": work,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
    }


@pytest.fixture(scope="session")
def tiny_pipeline_db(tiny_run) -> str:
    return tiny_run["db"]
