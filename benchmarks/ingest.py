"""Ingest alone: processed_data (and skipped_series) for every batch, at several batch counts.

    python benchmarks/ingest.py [--servers 2000] [--months 36] [--batches 5,20,80] [--runs 1]

For each CAPACITY_BATCHES value, a fresh process (the partitions are defined when the code loads)
materialises only processed_data/skipped_series of the job capacity_forecast for every batch, in
``--runs`` Dagster runs over contiguous ranges of batches (1: one run covers them all; 2: what
`capacity run --workers 2` does), one after the other, into a fresh DuckDB file and Dagster instance
under benchmarks/out/. Prints per configuration: processed_data's ``read_seconds`` metadata (the
input scan: inspect, fingerprints, daily aggregation), its step time, and the whole run's wall time.
The input should be read once per run whatever the number of batches, so read seconds should stay
flat from 5 to 80 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(runs: int) -> None:
    """In a process whose CAPACITY_* environment is set: run the ingest steps and print JSON."""
    import dagster as dg

    from capacity_assets.pipeline import definitions
    from capacity_assets.pipeline.instance import get_instance
    from capacity_assets.pipeline.jobs import range_tags, ranges
    from capacity_assets.pipeline.runner import QUIET_RUN_CONFIG

    instance = get_instance()
    from capacity_assets.config import load
    from capacity_assets.inputs.batching import batch_keys

    job = definitions.build_defs().resolve_job_def("capacity_forecast")
    keys = batch_keys(load().batches)
    per_run = -(-len(keys) // runs)
    out = []
    for first, last in ranges(keys, per_run):
        t = time.monotonic()
        result = job.execute_in_process(
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            tags=range_tags(first, last),
            raise_on_error=True,
            asset_selection=[dg.AssetKey("processed_data"), dg.AssetKey("skipped_series")],
        )
        wall = time.monotonic() - t
        stats = {
            s.step_key: s.end_time - s.start_time
            for s in instance.get_run_step_stats(result.run_id)
        }
        mats = [
            e
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
            and e.asset_key.path[-1] == "processed_data"
        ]
        meta = mats[0].event_specific_data.materialization.metadata
        out.append(
            {
                "range": f"{first}..{last}",
                "wall": wall,
                "step": stats.get("processed_data"),
                "read_seconds": float(meta["read_seconds"].value),
                "rows_in": int(meta["rows_in"].value),
                "servers": int(meta["servers"].value),
            }
        )
    print("RESULT " + json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=2000)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", default="5,20,80")
    ap.add_argument(
        "--runs", type=int, default=1, help="Dagster runs per configuration (ranges of batches)"
    )
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.runs)
        return 0

    from capacity_assets.demo.fleet import write_fleet

    out = Path(args.out)
    fleet = out / f"fleet_{args.servers}_{args.months}_{args.seed}"  # shared with full_fleet.py
    if not (fleet / "hierarchy.csv").exists():
        write_fleet(fleet, servers=args.servers, months=args.months, seed=args.seed)
    print(
        f"fleet: {fleet} ({args.servers} servers, {args.months} months); load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(
        f"{'batches':>7} {'runs':>4} {'read s':>7} {'step s':>7} {'run wall s':>10} {'process s':>9}  per run"
    )
    for n in [int(x) for x in args.batches.split(",")]:
        work = out / f"ingest_{args.servers}_b{n}_r{args.runs}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        env = {
            **os.environ,
            "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
            "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
            "CAPACITY_DB": str(work / "capacity.duckdb"),
            "CAPACITY_BATCHES": str(n),
            "DAGSTER_HOME": str(work / ".dagster"),
        }
        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--runs", str(args.runs)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        total = time.monotonic() - t
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return 1
        res = json.loads(lines[-1][7:])
        read, step, wall = (sum(r[k] for r in res) for k in ("read_seconds", "step", "wall"))
        print(
            f"{n:>7} {len(res):>4} {read:7.2f} {step:7.2f} {wall:10.2f} {total:9.1f}  "
            + "; ".join(
                f"{r['range']}: read {r['read_seconds']:.2f}s, step {r['step']:.2f}s, {r['servers']} servers"
                for r in res
            ),
            flush=True,
        )
    print(f"load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
