"""A backfill of every batch launched from the Dagster UI against `capacity run --force`, same work.

    python benchmarks/ui_backfill.py [--servers 50] [--months 36] [--workers 2] [--port 3917]

On one demo fleet (the one benchmarks/versus_seed.py writes), in a fresh folder with its own
DuckDB file and DAGSTER_HOME:
1. `capacity run --workers W` once, untimed, so the tables, the hierarchy and the instance exist;
2. `capacity run --workers W --force`, timed: the whole command, and its batch runs alone (first
   batch run's start to the last one's end, from the event log);
3. `capacity ui --port P` (dagster dev: webserver, daemon, code server) on the same instance; once it
   answers, a backfill of every partition of every asset of the job capacity_forecast is launched
   through the GraphQL API (launchPartitionBackfill with that asset selection and every batch, as
   capacity_assets_tests/pipeline/test_ui_backfill.py does) and timed from the launch until every
   run of the backfill has finished (and until the backfill itself is marked complete).
The backfill policy makes it about one run per core, each over a range of batches; queued runs start
at most one per core (dagster.yaml). The UI is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
sys.path[:0] = [str(REPO)]  # capacity_assets_tests.servers: the tests' GraphQL helper


def graphql(port: int, query: str) -> dict:
    from capacity_assets_tests.servers import graphql as query_ui

    return query_ui(port, query, timeout=60)


def batch_span(home: Path, since: float = 0.0) -> tuple[float, float, int]:
    """(first start, last end, runs) of the capacity_forecast runs that started after ``since``."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        spans = []
        for run in instance.get_runs():
            if run.job_name != "capacity_forecast":
                continue
            logs = instance.all_logs(run.run_id)
            if logs and logs[0].timestamp >= since:
                spans.append((logs[0].timestamp, logs[-1].timestamp))
    return min(s for s, _ in spans), max(e for _, e in spans), len(spans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=3917)
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()

    from capacity_assets.demo.fleet import write_fleet

    out = Path(args.out)
    fleet = out / f"versus_seed_{args.servers}_{args.months}_{args.seed}" / "fleet"
    if not (fleet / "hierarchy.csv").exists():
        write_fleet(fleet, servers=args.servers, months=args.months, seed=args.seed)
    work = out / f"ui_backfill_{args.servers}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(REPO / "workspace.yaml", work / "workspace.yaml")
    home = work / ".dagster"
    env = {
        **os.environ,
        "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
        "CAPACITY_DB": str(work / "capacity.duckdb"),
        "DAGSTER_HOME": str(home),
    }
    print(
        f"fleet {fleet}; load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    run = [str(BIN / "capacity"), "run", "--workers", str(args.workers)]
    with open(work / "first_run.log", "w") as log:
        subprocess.run(run, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)

    t0 = time.time()
    with open(work / "forced_run.log", "w") as log:
        subprocess.run(
            [*run, "--force"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=True
        )
    cli_wall = time.time() - t0
    first, last, n_cli = batch_span(home, t0)
    cli_batches = last - first
    print(
        f"capacity run --force --workers {args.workers}: {cli_wall:.1f}s (its {n_cli} batch runs: {cli_batches:.1f}s)",
        flush=True,
    )

    log = open(work / "ui.log", "wb")
    ui = subprocess.Popen(
        [str(BIN / "capacity"), "ui", "--port", str(args.port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                graphql(args.port, "{ version }")
                break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    raise SystemExit(
                        "capacity ui did not start; see " + str(work / "ui.log")
                    ) from None
                time.sleep(1)
        nodes = graphql(args.port, "{ assetNodes { assetKey { path } jobNames isPartitioned } }")[
            "assetNodes"
        ]
        assets = [
            n["assetKey"]["path"]
            for n in nodes
            if "capacity_forecast" in n["jobNames"] and n["isPartitioned"]
        ]
        os.environ["CAPACITY_BATCHES"] = env.get("CAPACITY_BATCHES", "20")
        from capacity_assets.config import load
        from capacity_assets.inputs.batching import batch_keys

        keys = batch_keys(load().batches)
        selection = ", ".join("{path: %s}" % json.dumps(p) for p in assets)
        time.sleep(5)  # let the daemon settle after start-up
        launched_at = time.time()
        res = graphql(
            args.port,
            "mutation { launchPartitionBackfill(backfillParams: { assetSelection: [%s], "
            "partitionNames: %s }) { __typename ... on LaunchBackfillSuccess { backfillId } "
            "... on PythonError { message } } }" % (selection, json.dumps(keys)),
        )["launchPartitionBackfill"]
        if res["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"backfill not launched: {res}")
        backfill = res["backfillId"]
        print(f"backfill {backfill}: {len(assets)} assets x {len(keys)} batches", flush=True)
        runs_done = backfill_done = None
        while time.time() < launched_at + 3600:
            runs = graphql(
                args.port,
                '{ runsOrError(filter: {tags: [{key: "dagster/backfill", value: "%s"}]}) '
                "{ ... on Runs { results { runId status startTime endTime } } } }" % backfill,
            )["runsOrError"]["results"]
            status = graphql(
                args.port,
                '{ partitionBackfillOrError(backfillId: "%s") { ... on PartitionBackfill '
                "{ status } } }" % backfill,
            )["partitionBackfillOrError"]["status"]
            if status in (
                "COMPLETED",
                "COMPLETED_SUCCESS",
                "COMPLETED_FAILED",
                "FAILED",
                "CANCELED",
            ):
                backfill_done = time.time()
                if runs_done is None:
                    runs_done = backfill_done
                break
            time.sleep(1)
        statuses = [r["status"] for r in runs]
        starts = [r["startTime"] for r in runs if r["startTime"]]
        ends = [r["endTime"] for r in runs if r["endTime"]]
        if backfill_done is not None and ends:
            runs_done = max(ends)  # the runs' own end (the server's clock is this machine's)
        spans = "; ".join(
            f"{r['startTime'] - launched_at:.1f}s..{r['endTime'] - launched_at:.1f}s"
            for r in sorted(runs, key=lambda r: r["startTime"] or 0)
            if r["startTime"] and r["endTime"]
        )
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(timeout=30)
    if runs_done is None:
        raise SystemExit(f"the backfill did not finish within an hour: {statuses}")
    ui_wall = runs_done - launched_at
    print(f"\n== {args.servers} servers, every batch, {args.workers} cores ==")
    print(f"capacity run --force: {cli_wall:.1f}s whole command; its batch runs {cli_batches:.1f}s")
    print(
        f"UI backfill: {ui_wall:.1f}s from launch to the last run's end ({len(runs)} runs: {statuses}); "
        f"backfill marked {status} after {backfill_done - launched_at:.1f}s; runs themselves "
        f"{max(ends) - min(starts):.1f}s from first start to last end; first run started "
        f"{min(starts) - launched_at:.1f}s after the launch; each run from/to (after the launch): {spans}"
    )
    print(
        f"ratio UI backfill / capacity run: {ui_wall / cli_wall:.2f} (target <= 1.20); "
        f"against its batch runs alone {ui_wall / cli_batches:.2f}"
    )
    print(f"load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
