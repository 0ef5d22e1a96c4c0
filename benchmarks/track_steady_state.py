"""The track record's cost once it is full: a weekly run with CAPACITY_KEEP_VINTAGES (26) vintages kept.

    python benchmarks/track_steady_state.py [--fleet benchmarks/out/demo200] [--servers 200] [--vintages 26]
                                            [--pythonpath OLD_CHECKOUT]

A fresh benchmark database holds one vintage, so the track-record steps (forecast_accuracy,
risk_calls, risk_resolved, risk_exceptions' lifecycle) look cheap there. This runs `capacity run` once
on the fleet, copies that week's forecast_history and risk_history rows back in time to make
``--vintages`` weekly vintages (one week apart, the newest the real one), then times a second
`capacity run --force` on that database: wall, CPU, and the step-seconds of every track step. With
``--pythonpath`` the second run uses another version of the package (e.g. a worktree of an older
commit) on an identical copy of the database, for a before/after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from full_fleet import stage_seconds
from proctree import adopt_orphans, children_cpu, reap_orphans

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TRACK = [
    "risk_exceptions",
    "risk_calls",
    "risk_resolved",
    "forecast_accuracy",
    "forecast_history",
    "risk_history",
]


def run(work: Path, env: dict, pythonpath: str | None = None) -> tuple[float, float]:
    env = dict(env)
    if pythonpath:
        env["PYTHONPATH"] = str(Path(pythonpath).resolve())
    cpu0, t = children_cpu(), time.monotonic()
    with open(work / "capacity_run.log", "a") as log:
        subprocess.run(
            [str(BIN / "capacity"), "run", "--force"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    wall = time.monotonic() - t
    reap_orphans()
    return wall, children_cpu() - cpu0


def age(db: str, vintages: int) -> int:
    """Copy the newest vintage of both append tables back 1..vintages-1 weeks; forecast_history rows."""
    import duckdb

    with duckdb.connect(db) as conn:
        v0 = conn.execute("select max(vintage) from forecast_history").fetchone()[0]
        for k in range(1, vintages):
            for table in ("forecast_history", "risk_history"):
                shift = {
                    "forecast_history": "vintage, ds",
                    "risk_history": "vintage, first_breach_date",
                }[table]
                repl = ", ".join(f"{c} - interval {7 * k} day as {c}" for c in shift.split(", "))
                conn.execute(
                    f"insert into {table} select * replace ({repl}, run_id || '-w{k}' as run_id) "
                    f"from {table} where vintage = ?",
                    [v0],
                )
        return conn.execute("select count(*) from forecast_history").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", default=str(HERE / "out" / "demo200"))
    ap.add_argument("--vintages", type=int, default=26)
    ap.add_argument("--pythonpath", help="PYTHONPATH of the measured run, e.g. an older checkout")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    fleet = Path(args.fleet).resolve()
    base = HERE / "out" / f"track_{fleet.name}_{args.vintages}"
    seeded = base / "seeded.duckdb"
    env = {
        **os.environ,
        "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
    }
    adopt_orphans()
    if not seeded.exists():
        shutil.rmtree(base, ignore_errors=True)
        (base / "seed").mkdir(parents=True)
        seed_env = {
            **env,
            "CAPACITY_DB": str(base / "seed" / "capacity.duckdb"),
            "DAGSTER_HOME": str(base / "seed" / ".dagster"),
        }
        print(f"first run on {fleet} ...", flush=True)
        run(base / "seed", seed_env)
        rows = age(seed_env["CAPACITY_DB"], args.vintages)
        shutil.copy(seed_env["CAPACITY_DB"], seeded)
        print(f"forecast_history now holds {args.vintages} vintages, {rows:,} rows")
    work = base / f"run{'_' + args.label if args.label else ''}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(seeded, work / "capacity.duckdb")
    run_env = {
        **env,
        "CAPACITY_DB": str(work / "capacity.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    wall, cpu = run(work, run_env, args.pythonpath)
    stages = stage_seconds(work / ".dagster")
    print(
        f"== capacity run --force with {args.vintages} vintages kept ({args.pythonpath or 'this checkout'}) =="
    )
    print(f"wall {wall:.1f}s, CPU {cpu:.0f}s")
    total = sum(sum(v) for v in stages.values())
    print(
        f"step-seconds: all steps {total:.1f}s, track steps {sum(sum(stages.get(s, [])) for s in TRACK):.1f}s"
    )
    for s in TRACK:
        print(f"  {s:20s} {sum(stages.get(s, [])):6.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
