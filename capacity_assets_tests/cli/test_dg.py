"""Today's Dagster CLI: `dg check defs` loads the code location from the repo root, `capacity ui`
serves `dg dev` (webserver and daemon) on the instance `capacity run` recorded to, and a `.env` in
the working folder gives `capacity` and Dagster the same settings."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from capacity_assets_tests.conftest import TINY_SATURATING
from capacity_assets_tests.servers import capacity_ui, graphql

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# what the tests put in .env instead of the environment
MOVED = ("DAGSTER_HOME", "CAPACITY_DB", "CAPACITY_METRICS", "CAPACITY_HIERARCHY")
DAEMONS = {"SCHEDULER", "SENSOR", "BACKFILL"}  # what schedules, sensors and UI backfills need


def environment(**settings) -> dict:
    """This process's environment without the variables the tests move into .env."""
    env = {k: v for k, v in os.environ.items() if k not in MOVED}
    return {**env, **settings}


def test_dg_check_defs_passes_from_the_repo_root_with_no_settings():
    """As .ci/run calls it in a clean clone: no DAGSTER_HOME, no CAPACITY_* variables."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and "CAPACITY_" not in k}
    proc = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


@pytest.fixture
def ui(tiny_run, tmp_path):
    """`capacity ui` in a copy of the tiny run's folder whose .env, not the environment, names the
    Dagster instance and the database, as an operator would set them once for both tools."""
    work = tmp_path / "ui"
    shutil.copytree(tiny_run["cwd"], work)
    settings = {
        **{k: tiny_run["env"][k] for k in ("CAPACITY_METRICS", "CAPACITY_HIERARCHY")},
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    (work / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    log_path = tmp_path / "ui.log"
    with capacity_ui(work, environment(), log_path) as ui:
        yield {**ui, "db": settings["CAPACITY_DB"], "log": log_path}


def test_capacity_ui_serves_dg_dev_with_its_daemon_on_the_instance_capacity_run_used(ui):
    cmdline = psutil.Process(ui["proc"].pid).cmdline()
    assert "dg" in {Path(a).name for a in cmdline[:2]} and "dev" in cmdline, cmdline

    # the runs `capacity run` recorded, among them the one that wrote the golden record
    with duckdb.connect(ui["db"], read_only=True) as conn:
        published = {r for (r,) in conn.execute("select distinct run_id from forecasts").fetchall()}
    runs = graphql(
        ui["port"], "{ runsOrError { ... on Runs { results { runId status jobName } } } }"
    )["runsOrError"]["results"]
    assert published and published <= {r["runId"] for r in runs}, (published, runs)
    assert {r["status"] for r in runs if r["runId"] in published} == {"SUCCESS"}, runs

    # the daemon runs beside the webserver: schedules, sensors and backfills are served
    deadline, statuses = time.time() + 90, {}
    while time.time() < deadline:
        health = graphql(
            ui["port"],
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }",
        )["instance"]["daemonHealth"]["allDaemonStatuses"]
        statuses = {d["daemonType"]: d["healthy"] for d in health}
        if all(statuses.get(d) for d in DAEMONS):
            break
        time.sleep(2)
    assert all(statuses.get(d) for d in DAEMONS), statuses
    text = ui["log"].read_text(errors="replace")
    assert "dg dev" in text and "Use 'dg dev' instead" not in text, text


def test_a_dot_env_sets_capacity_settings_and_the_environment_and_flags_win(
    tiny_pipeline_db, tmp_path
):
    db = tmp_path / "cap.duckdb"
    shutil.copy(tiny_pipeline_db, db)
    (tmp_path / ".env").write_text(f"# the operator's settings\nCAPACITY_DB={db}\n")

    def report(*flags, **env):
        return subprocess.run(
            [str(BIN / "capacity"), "report", "--out", "out", *flags],
            cwd=tmp_path,
            env=environment(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = report()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert TINY_SATURATING[0] in (tmp_path / "out" / "risk_all.csv").read_text()

    elsewhere = tmp_path / "from_environment.duckdb"
    proc = report(CAPACITY_DB=str(elsewhere))
    assert proc.returncode == 2 and f"{elsewhere} has no risk_exceptions table" in proc.stderr

    flagged = tmp_path / "from_flag.duckdb"
    proc = report("--db", str(flagged), CAPACITY_DB=str(elsewhere))
    assert proc.returncode == 2 and f"{flagged} has no risk_exceptions table" in proc.stderr


def test_capacity_ui_refuses_a_dot_env_that_dagster_would_read_otherwise(tmp_path):
    """dg dev lets .env win over the environment: rather than a UI on another database or instance
    than announced, `capacity ui` says which variables disagree and starts nothing."""
    (tmp_path / ".env").write_text(
        f"CAPACITY_DB={tmp_path / 'file.duckdb'}\nDAGSTER_HOME=relative/home\n"
    )
    proc = subprocess.run(
        [str(BIN / "capacity"), "ui", "--db", str(tmp_path / "flag.duckdb"), "--port", "1"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert str(tmp_path / ".env") in err and "CAPACITY_DB is not what a flag" in err, err
    assert "DAGSTER_HOME is 'relative/home', and Dagster needs an absolute path" in err, err
    assert not (tmp_path / "relative").exists()
