"""`capacity ui` on the instance `capacity run` wrote to: partitions visible, and a backfill of
every batch launched through the UI's GraphQL API finishes with exactly one set of rows per batch."""

import math
import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from capacity_assets.config import load
from capacity_assets.pipeline.partitions import layout
from capacity_assets_tests.servers import capacity_ui, graphql

REPO = Path(__file__).resolve().parents[2]
TABLES = (
    "processed_data",
    "prophet_results",
    "challenger_results",
    "champions",
    "forecasts",
    "risk_exceptions",
)
# every partitioned asset, as a planner selects "materialise all" for every partition
ASSETS = (
    "processed_data",
    "skipped_series",
    "prophet_results",
    "challenger_results",
    "combination_results",
    "champions",
    "forecasts",
    "risk_exceptions",
    "capacity_plan",
    "forecast_history",
    "risk_history",
    "forecast_accuracy",
    "risk_calls",
    "risk_resolved",
    "batch_ledger",
)


def rows_per_batch(db: str) -> dict:
    conn = duckdb.connect(db, read_only=True)
    try:
        return {
            t: dict(conn.execute(f"select batch, count(*) from {t} group by 1").fetchall())
            for t in TABLES
        }
    finally:
        conn.close()


def _by_batch(db: str, sql: str) -> dict:
    conn = duckdb.connect(db, read_only=True)
    try:
        return dict(conn.execute(sql).fetchall())
    finally:
        conn.close()


def run_ids(db: str) -> dict:
    """{batch: the run that wrote its golden record}."""
    return _by_batch(db, "select batch, any_value(run_id) from forecasts group by 1")


# the backfill policy packs the 3 batches into ranges of BATCHES_PER_RUN: one run per core
RUNS = math.ceil(3 / layout(load()).per_run)


@pytest.fixture
def ui(tiny_run, tmp_path):
    """A copy of the tiny run (DuckDB file + Dagster instance) served by `capacity ui`."""
    work = tmp_path / "ui"
    shutil.copytree(tiny_run["cwd"], work)
    shutil.copy(REPO / "workspace.yaml", work / "workspace.yaml")
    env = {
        **tiny_run["env"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    with capacity_ui(work, {**os.environ, **env}, tmp_path / "ui.log") as ui:
        yield {"port": ui["port"], "db": env["CAPACITY_DB"]}


def ledger_run_ids(db: str) -> dict:
    """{batch: the run its ledger row names}."""
    return _by_batch(db, "select batch, run_id from batch_ledger")


def test_ui_shows_partitions_and_a_backfill_of_every_batch_keeps_one_set_of_rows(ui):
    """ "Materialize all" in the UI: every asset, business_hierarchy too, for every batch. Dagster puts
    the hierarchy in a run of its own and so splits each range in two (processed_data to the models,
    then champions onwards); the ledger's run used to refuse the second part, so nothing was published."""
    stats = graphql(
        ui["port"],
        "{ assetNodes { assetKey { path } partitionStats { numMaterialized numPartitions } } }",
    )
    by_asset = {n["assetKey"]["path"][0]: n["partitionStats"] for n in stats["assetNodes"]}
    assert by_asset["processed_data"] == {"numMaterialized": 3, "numPartitions": 3}
    assert by_asset["risk_exceptions"] == {"numMaterialized": 3, "numPartitions": 3}
    before, runs_before = rows_per_batch(ui["db"]), run_ids(ui["db"])
    batches = {"batch_00", "batch_01", "batch_02"}
    assert all(set(before[t]) == batches for t in TABLES if t != "risk_exceptions"), before
    assert sum(before["risk_exceptions"].values()) >= 1  # the tiny fleet's saturating server

    selection = ", ".join('{path: ["%s"]}' % a for a in ("business_hierarchy", *ASSETS))
    launched = graphql(
        ui["port"],
        "mutation { launchPartitionBackfill(backfillParams: { assetSelection: [%s], "
        'partitionNames: ["batch_00", "batch_01", "batch_02"] }) { __typename '
        "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"
        % selection,
    )
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill = result["backfillId"]
    deadline, status = time.time() + 600, None
    while time.time() < deadline:
        status = graphql(
            ui["port"],
            '{ partitionBackfillOrError(backfillId: "%s") { ... on PartitionBackfill '
            "{ status } } }" % backfill,
        )["partitionBackfillOrError"]["status"]
        if status not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        time.sleep(3)
    runs = graphql(
        ui["port"],
        '{ runsOrError(filter: {tags: [{key: "dagster/backfill", value: "%s"}]}) '
        "{ ... on Runs { results { runId status assetSelection { path } } } } }" % backfill,
    )["runsOrError"]["results"]
    assert status == "COMPLETED_SUCCESS" and {r["status"] for r in runs} == {"SUCCESS"}, (
        status,
        runs,
    )
    # the backfill policy packs the batches into ranges: one run per core holds processed_data
    ranged = [r for r in runs if ["processed_data"] in [a["path"] for a in r["assetSelection"]]]
    assert len(ranged) == RUNS, runs
    # same batches, same row counts: nothing lost, nothing duplicated
    assert rows_per_batch(ui["db"]) == before
    # ... and every batch was really re-written by the backfill's runs, not left as it was, and its
    # ledger row is the run that published its golden record
    runs_after = run_ids(ui["db"])
    assert set(runs_after) == batches and all(runs_after[b] != runs_before[b] for b in batches), (
        runs_before,
        runs_after,
    )
    assert ledger_run_ids(ui["db"]) == runs_after
    # the freshness check the backfill ran with batch_ledger sees the batches it just published
    executions = graphql(
        ui["port"],
        '{ assetCheckExecutions(assetKey: {path: ["batch_ledger"]}, checkName: '
        '"every_batch_fresh", limit: 20) { runId status evaluation { description } } }',
    )["assetCheckExecutions"]
    ours = [e for e in executions if e["runId"] in {r["runId"] for r in runs}]
    assert ours and all(e["status"] == "SUCCEEDED" for e in ours), executions
