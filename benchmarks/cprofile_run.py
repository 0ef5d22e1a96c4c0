"""CPU profile of one `capacity run` in one process (cProfile, CPU-time clock).

    python benchmarks/cprofile_run.py --fleet DIR [--batches 20] [--top 40]

Runs `capacity run --workers 1 --force` in this process (one Dagster run over every batch, as each
worker does for its range) on the fleet in DIR (metrics/*.parquet, hierarchy.csv), in a fresh folder
under benchmarks/out/, under cProfile with ``time.process_time`` as the clock, so time other
processes take from the cores is not counted. CmdStan's fits run in child processes and are not in
the profile (they show as the Python around them). Prints the CPU seconds per top-level package
(own time of its functions), then the functions with the most cumulative and own time, and writes
the stats to cprofile.out for snakeviz/pstats.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def package_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins/C"
    p = Path(filename).parts
    if "site-packages" in p:
        return p[p.index("site-packages") + 1].split(".")[0]
    if "capacity_assets" in p:
        i = p.index("capacity_assets")
        return "capacity_assets." + (p[i + 1] if len(p) > i + 2 else "")
    return "stdlib"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", required=True)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    fleet = Path(args.fleet).resolve()
    work = Path(args.out) / f"cprofile_{fleet.name}_b{args.batches}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.update(
        {
            "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
            "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
            "CAPACITY_DB": str(work / "capacity.duckdb"),
            "CAPACITY_BATCHES": str(args.batches),
            "DAGSTER_HOME": str(work / ".dagster"),
        }
    )
    os.chdir(work)
    prof = cProfile.Profile(time.process_time)
    t0, c0 = time.monotonic(), time.process_time()
    prof.enable()
    from capacity_assets.cli.main import main as capacity

    rc = capacity(["run", "--workers", "1", "--force"])
    prof.disable()
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    prof.dump_stats(str(work / "cprofile.out"))
    print(
        f"\ncapacity run --workers 1 --force: exit {rc}, {wall:.1f}s wall, {cpu:.1f}s CPU in this process "
        f"(CmdStan children not included); load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    st = pstats.Stats(prof)
    own = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in st.stats.items():
        own[package_of(filename)] += tottime
    total = sum(own.values()) or 1
    print("CPU by package (own time of its functions):")
    for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {k:<32} {v:7.1f}s {v / total:6.1%}")
    st.sort_stats("cumulative").print_stats(args.top)
    st.sort_stats("tottime").print_stats(args.top)
    print(f"stats: {work / 'cprofile.out'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
