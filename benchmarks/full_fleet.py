"""The whole graph for a demo fleet of N servers, run the way a user runs it (`capacity run`).

    python benchmarks/full_fleet.py --servers 200 [--workers 2] [--months 36] [--batches 20]
    python benchmarks/full_fleet.py --fleet data/demo [--workers 2]     # files `capacity demo --no-run` wrote

Prints wall time per stage and in total, CPU seconds per series, peak memory of the largest process
and of all processes together, the DuckDB file's size, the extrapolation to 2,000 servers, and the
breakdown of benchmarks/profile_run.py (Dagster bookkeeping, IO, fitting, other; the command's
timeline). Each run starts from an empty database and Dagster instance under benchmarks/out/.
Other CAPACITY_* variables (CAPACITY_ENGINES, ...) pass through to `capacity run`; --label keeps
such runs apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil
from proctree import adopt_orphans, reap_orphans

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def sample_memory(pid: int, peaks: dict, stop: threading.Event) -> None:
    """Peak RSS of the largest process and of the whole process tree, sampled every 0.2 s."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            if max(rss, default=0) > peaks.get("largest", 0):
                peaks["largest"], peaks["largest_at"] = max(rss), time.time()
            peaks["total"] = max(peaks.get("total", 0), sum(rss))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)


def stage_seconds(home: Path) -> dict[str, list[float]]:
    """Step durations per asset (stage) over every batch run, from the Dagster instance."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    per_stage = defaultdict(list)
    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for s in instance.get_run_step_stats(run.run_id):
                if s.start_time and s.end_time:
                    per_stage[s.step_key].append(s.end_time - s.start_time)
    return per_stage


def steps_at(home: Path, when: float) -> str:
    """The steps of the batch runs that were running at epoch ``when``."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    found = []
    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for s in instance.get_run_step_stats(run.run_id):
                if s.start_time and s.end_time and s.start_time <= when <= s.end_time:
                    found.append(
                        f"{s.step_key} ({run.tags.get('dagster/asset_partition_range_start', run.job_name)}..)"
                    )
    return ", ".join(found) or "no step (between steps)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument(
        "--fleet",
        help="an existing fleet folder (metrics/*.parquet, hierarchy.csv), e.g. the "
        "demo's; --servers then only names the run",
    )
    ap.add_argument("--label", default="", help="suffix of the run folder under --out")
    ap.add_argument(
        "--pythonpath",
        help="PYTHONPATH of `capacity run` only, e.g. an older version of the package "
        "extracted with `git archive REV capacity_assets | tar -x -C DIR`, "
        "for a before/after comparison on the same machine",
    )
    args = ap.parse_args()

    from capacity_assets.demo.fleet import write_fleet

    out = Path(args.out)
    fleet_dir = (
        Path(args.fleet).resolve()
        if args.fleet
        else out / f"fleet_{args.servers}_{args.months}_{args.seed}"
    )
    if not (fleet_dir / "hierarchy.csv").exists():
        t = time.monotonic()
        write_fleet(fleet_dir, servers=args.servers, months=args.months, seed=args.seed)
        print(f"generated the fleet in {time.monotonic() - t:.1f}s: {fleet_dir}")
    run_dir = (
        out
        / f"run_{args.servers}_w{args.workers}_b{args.batches}{'_' + args.label if args.label else ''}"
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "CAPACITY_METRICS": str(fleet_dir / "metrics" / "*.parquet"),
        "CAPACITY_HIERARCHY": str(fleet_dir / "hierarchy.csv"),
        "CAPACITY_DB": str(run_dir / "capacity.duckdb"),
        "CAPACITY_BATCHES": str(args.batches),
        "DAGSTER_HOME": str(run_dir / ".dagster"),
    }
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())

    load_before = os.getloadavg()
    adopt_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    epoch_started = time.time()
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "capacity"), "run", "--workers", str(args.workers), "--force"],
        cwd=run_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample_memory, args=(proc.pid, peaks, stop), daemon=True)
    sampler.start()
    log = []
    for line in proc.stdout:
        log.append(line)
        if line.startswith(("[", "Summary", "  ", "capacity")) and " - dagster - " not in line:
            print(line, end="", flush=True)
    rc = proc.wait()
    wall = time.monotonic() - started
    epoch_ended = time.time()
    load_after = os.getloadavg()
    stop.set()
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (run_dir / "capacity_run.log").write_text("".join(log))
    if rc != 0:
        print(f"capacity run exited {rc}; see {run_dir / 'capacity_run.log'}")
        return rc

    import duckdb

    conn = duckdb.connect(env["CAPACITY_DB"], read_only=True)
    series = conn.execute("select count(*) from champions").fetchone()[0]
    processed = conn.execute(
        "select count(distinct (server_id, resource)) from processed_data"
    ).fetchone()[0]
    conn.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stages = stage_seconds(run_dir / ".dagster")
    size = Path(env["CAPACITY_DB"]).stat().st_size

    print(
        f"\n== full fleet: {args.servers} servers x 4 resources x {args.months} months, {args.batches} batches, "
        f"{args.workers} workers =="
    )
    print(
        f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    print(f"series: {processed} processed, {series} forecast")
    print(f"wall time, total: {wall:.0f}s ({wall / 60:.1f} min)")
    print(
        "stage step-seconds summed over runs (share of all step time; wall ~ sum / workers; a run covers "
        "a range of batches):"
    )
    total_steps = sum(sum(v) for v in stages.values()) or 1
    for stage, secs in sorted(stages.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"  {stage:<20} {sum(secs):8.1f}s  {sum(secs) / total_steps:5.1%}  ({len(secs)} run(s), "
            f"{sum(secs) / args.batches:.2f}s per batch)"
        )
    print(
        f"CPU: {cpu:.0f}s in all processes = {cpu / max(series, 1) * 1000:.0f} ms per forecast series"
    )
    print(
        f"peak memory: largest process {peaks.get('largest', 0) / 2**20:.0f} MB, "
        f"all processes together {peaks.get('total', 0) / 2**20:.0f} MB"
    )
    print(f"DuckDB file: {size / 2**20:.0f} MB")
    if "largest_at" in peaks:
        print(
            f"the largest process peaked while running: {steps_at(run_dir / '.dagster', peaks['largest_at'])}"
        )
    print(
        f"load average (1/5/15 min) before {' / '.join(f'{x:.1f}' for x in load_before)}, after "
        f"{' / '.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} cores (above the core count: "
        f"other work was running)"
    )
    from profile_run import breakdown, report

    print("\n== where the time went (benchmarks/profile_run.py) ==")
    report(breakdown(run_dir / ".dagster", epoch_started, epoch_ended))
    scale = 2000 / args.servers
    print(
        f"extrapolated to 2,000 servers on this machine: {wall * scale / 60:.1f} min wall, "
        f"{size * scale / 2**30:.2f} GB DuckDB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
