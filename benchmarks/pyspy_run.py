"""Sampling profile (py-spy) of a whole `capacity run --workers 2`, worker processes included.

    .venv/bin/pip install --target benchmarks/out/tools py-spy      # once; not a project dependency
    python benchmarks/pyspy_run.py --fleet DIR [--workers 2] [--rate 50]

Unlike cProfile, sampling does not inflate code that makes millions of small Python calls, so the
shares are those of a normal run. Runs `capacity run --workers W --force` on the fleet in DIR
(metrics/*.parquet, hierarchy.csv) in a fresh folder under benchmarks/out/ under
``py-spy record --subprocesses --format raw``, then charges every on-CPU sample of a Python process to
the first matching layer below (most specific first) and prints CPU seconds per layer. CmdStan is
a native child program that py-spy does not sample: Prophet's fits show only as their Python side.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

# (layer, regular expression on the joined stack): the first that matches wins
LAYERS = [
    ("check batch_not_empty (set() rebuilt per batch)", r"batch_not_empty"),
    ("imports (process start)", r"_find_and_load"),
    ("Dagster event log (SQLite writes/reads)", r"sqlalchemy|sqlite_event_log|store_event|sqlite3"),
    (
        "input read (DuckDB scan, fingerprints)",
        r"files\.py|fingerprint\.py|workflow\.py|sources\.py",
    ),
    (
        "DuckDB IO: staging, publish, loads, history reads",
        r"io_manager\.py|staging\.py|store/db\.py|store/history\.py|store/ledger\.py|db_io_manager",
    ),
    ("prophet engine (Python side; CmdStan not sampled)", r"engines/prophet\.py"),
    ("challenger engine (XGBoost)", r"engines/challenger\.py"),
    ("ets engine", r"engines/ets\.py"),
    (
        "engine ending: calibration, fallback, conform",
        r"engines/(intervals|registry|naive|base)\.py",
    ),
    ("combination", r"forecasting/combination\.py"),
    ("tournament (champions, golden record)", r"forecasting/tournament\.py"),
    ("thresholds / hierarchy normalisation", r"risk/thresholds\.py|inputs/hierarchy\.py"),
    ("risk list and capacity plan", r"risk/"),
    ("track record", r"track/"),
    ("cleaning (calendar, gap fill)", r"inputs/cleaning\.py"),
    ("asset code, other (splitting batches, checks, metadata)", r"capacity_assets/pipeline/"),
    ("Dagster, other (planning, events, type checks)", r"dagster"),
    ("CLI and summary", r"capacity_assets/cli/"),
]


def classify(stack: str) -> str:
    for layer, pattern in LAYERS:
        if re.search(pattern, stack):
            return layer
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50, help="samples per second")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--raw", help="only summarise this raw py-spy output of an earlier run")
    args = ap.parse_args()
    if args.raw:
        summarise(Path(args.raw), args.rate)
        return 0
    spy = HERE / "out" / "tools" / "bin" / "py-spy"
    if not spy.exists():
        raise SystemExit(f"py-spy not found at {spy}; see this script's docstring")
    fleet = Path(args.fleet).resolve()
    work = Path(args.out) / f"pyspy_{fleet.name}_w{args.workers}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "CAPACITY_METRICS": str(fleet / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet / "hierarchy.csv"),
        "CAPACITY_DB": str(work / "capacity.duckdb"),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    raw = work / "pyspy.txt"
    t = time.monotonic()
    with open(work / "capacity_run.log", "w") as log:
        rc = subprocess.run(
            [
                str(spy),
                "record",
                "--subprocesses",
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--",
                str(BIN / "capacity"),
                "run",
                "--workers",
                str(args.workers),
                "--force",
            ],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    wall = time.monotonic() - t
    if rc != 0 or not raw.exists():
        raise SystemExit(f"py-spy/capacity run failed ({rc}); see {work / 'capacity_run.log'}")
    print(
        f"capacity run --workers {args.workers} --force under py-spy: {wall:.1f}s wall; load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    summarise(raw, args.rate)
    return 0


def summarise(raw: Path, rate: int) -> None:
    layers: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            layers[classify(stack)] += int(count)
    total = sum(layers.values()) or 1
    print(f"{total / rate:.0f} s of on-CPU Python samples (all processes), by layer:")
    for layer, n in layers.most_common():
        print(f"  {layer:<58} {n / rate:7.1f}s {n / total:6.1%}")
    print(f"raw stacks: {raw} (e.g. speedscope or flamegraph.pl after conversion)")


if __name__ == "__main__":
    sys.exit(main())
