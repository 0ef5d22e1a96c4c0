"""`capacity run` against the seed-style script (benchmarks/seed_style.py) on the same files, in one go.

    python benchmarks/versus_seed.py [--servers 50] [--months 36] [--workers 2] [--repeat 1]

Writes one demo fleet (capacity_assets.demo.fleet.write_fleet) under benchmarks/out/, then times
* `capacity run --workers W`: the real console script, in a fresh directory with a fresh
  DAGSTER_HOME and DuckDB file (so nothing is skipped as unchanged), the whole graph, the whole
  command (hierarchy, every batch, freshness check, summary);
* `python benchmarks/seed_style.py --processes W` on the same metrics files;
and prints both wall times (and CPU of each, children included) and the ratio. With --repeat N the
pair is run N times, alternating which goes first, and the medians are reported too.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from proctree import adopt_orphans, reap_orphans

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the command and its children, exit code)."""
    adopt_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), rc


def run_capacity(fleet: Path, work: Path, workers: int, batches: int | None) -> tuple[float, float]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
        "CAPACITY_DB": str(work / "capacity.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    if batches:
        env["CAPACITY_BATCHES"] = str(batches)
    t0 = time.time()
    wall, cpu, rc = timed(
        [str(BIN / "capacity"), "run", "--workers", str(workers)],
        work,
        env,
        work / "capacity_run.log",
    )
    if rc != 0:
        raise SystemExit(f"capacity run exited {rc}; see {work / 'capacity_run.log'}")
    from profile_run import breakdown, report

    report(breakdown(work / ".dagster", t0, t0 + wall), print_=lambda s: print("    " + s))
    print(
        f"  capacity run --workers {workers}: {wall:.1f}s wall, {cpu:.0f}s CPU "
        f"({(work / 'capacity_run.log').read_text().strip().splitlines()[-1].strip()[:100]})",
        flush=True,
    )
    return wall, cpu


def run_seed(fleet: Path, work: Path, workers: int) -> tuple[float, float]:
    work.mkdir(parents=True, exist_ok=True)
    wall, cpu, rc = timed(
        [
            sys.executable,
            str(HERE / "seed_style.py"),
            "--metrics",
            str(fleet / "metrics" / "*.parquet"),
            "--processes",
            str(workers),
            "--out",
            str(work / "seed_forecasts.parquet"),
        ],
        work,
        dict(os.environ),
        work / "seed_style.log",
    )
    if rc != 0:
        raise SystemExit(f"seed_style.py exited {rc}; see {work / 'seed_style.log'}")
    print(
        f"  seed_style.py --processes {workers}: {wall:.1f}s wall, {cpu:.0f}s CPU "
        f"({(work / 'seed_style.log').read_text().strip().splitlines()[-1][:100]})",
        flush=True,
    )
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--batches", type=int, default=None, help="CAPACITY_BATCHES (default: the product's, 20)"
    )
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()

    from capacity_assets.demo.fleet import write_fleet

    out = Path(args.out) / f"versus_seed_{args.servers}_{args.months}_{args.seed}"
    fleet = out / "fleet"
    info = write_fleet(fleet, servers=args.servers, months=args.months, seed=args.seed)
    print(
        f"fleet: {args.servers} servers x 4 resources x {args.months} months, {info['rows']:,} rows in {fleet}"
    )
    print(f"load average before (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    cap, seed = [], []
    for i in range(args.repeat):
        order = [("capacity", run_capacity), ("seed", run_seed)]
        if i % 2:
            order.reverse()
        for name, fn in order:
            if name == "capacity":
                cap.append(fn(fleet, out / "capacity", args.workers, args.batches))
            else:
                seed.append(fn(fleet, out / "seed", args.workers))
    c = statistics.median(w for w, _ in cap)
    s = statistics.median(w for w, _ in seed)
    what = "median of " + str(args.repeat) if args.repeat > 1 else "one run each"
    print(f"\n== {args.servers} servers, {args.workers} workers/processes ({what}) ==")
    print(f"capacity run: {c:.1f}s wall ({statistics.median(x for _, x in cap):.0f}s CPU)")
    print(f"seed-style:   {s:.1f}s wall ({statistics.median(x for _, x in seed):.0f}s CPU)")
    print(f"ratio capacity / seed: {c / s:.2f} (target <= 0.50)")
    print(
        f"load average at the end (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores (above the core count: other work was running)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
