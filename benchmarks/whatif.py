"""`capacity whatif` on a large published golden record: wall time of the command, end to end.

    python benchmarks/whatif.py [--db STORE] [--servers 2000] [--base 40] [--months 36] [--repeat 3]

Without ``--db`` it runs `capacity demo --servers BASE --months MONTHS` (challenger only: the models
do not matter here) into benchmarks/out/whatif/, then copies that store and clones its servers
(`<id>-c<k>`) in every table `capacity whatif` reads (forecasts, processed_data, business_hierarchy,
risk_exceptions, capacity_plan) until the fleet holds ``--servers`` servers: the command's cost
depends on the rows it reads and recomputes, not on how the forecasts were made, and a 2,000-server
run takes a quarter of an hour of both cores. Then it times `capacity whatif FILE --json` (a fresh
process each time, imports included) with three scenarios: load added to a department, a
migration, a retirement with a resize, and the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CLONED = ("forecasts", "processed_data", "business_hierarchy", "risk_exceptions", "capacity_plan")


def capacity(*args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "capacity"), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )


def base_store(work: Path, servers: int, months: int) -> Path:
    db = work / "base.duckdb"
    if not db.exists():
        env = {
            "CAPACITY_DB": str(db),
            "CAPACITY_ENGINES": "challenger",
            "DAGSTER_HOME": str(work / ".dagster"),
        }
        capacity(
            "demo", "--servers", str(servers), "--months", str(months), "--out", str(work / "fleet"),
            env=env, cwd=work,
        )  # fmt: skip
    return db


def inflate(base: Path, out: Path, servers: int) -> int:
    """A copy of ``base`` whose tables hold about ``servers`` servers; returns how many."""
    shutil.copy(base, out)
    with duckdb.connect(str(out)) as conn:
        have = conn.execute("select count(distinct server_id) from forecasts").fetchone()[0]
        copies = max(1, -(-servers // have))
        for table in CLONED:
            conn.execute(
                f"create temp table c as select * from {table}; delete from {table}; "
                f"insert into {table} select c.* replace (server_id || '-c' || k as server_id) "
                f"from c, range({copies}) r(k); drop table c"
            )
        return have * copies


def scenarios_file(db: Path, path: Path) -> None:
    with duckdb.connect(str(db), read_only=True) as conn:
        first, last = conn.execute("select min(ds), max(ds) from forecasts").fetchone()
        dep = conn.execute(
            "select department from business_hierarchy group by 1 order by count(*) desc limit 1"
        ).fetchone()[0]
        ids = [r[0] for r in conn.execute(
            "select distinct server_id from forecasts order by 1 limit 4"
        ).fetchall()]  # fmt: skip
    mid = first + (last - first) / 3
    path.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "onboard": [
                    {
                        "add_load": {
                            "where": {"department": dep},
                            "resources": ["cpu", "memory"],
                            "from": f"{mid:%Y-%m-%d}",
                            "points": 30,
                            "ramp_days": 14,
                        }
                    }
                ],
                "consolidate": [
                    {
                        "migrate": {
                            "from_server": ids[0],
                            "to_server": ids[1],
                            "resources": ["cpu"],
                            "from": f"{mid:%Y-%m-%d}",
                            "share": 0.5,
                        }
                    },
                    {
                        "retire": {
                            "servers": [ids[2]],
                            "from": f"{mid:%Y-%m-%d}",
                            "to_server": ids[3],
                        }
                    },
                    {
                        "resize": {
                            "servers": [ids[3]],
                            "resources": ["memory"],
                            "from": f"{first:%Y-%m-%d}",
                            "factor": 2,
                        }
                    },
                ],
                "baseline": [],
            }
        ),  # fmt: skip
        encoding="utf-8",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="an existing DuckDB store to use as it is (no cloning)")
    ap.add_argument("--servers", type=int, default=2000)
    ap.add_argument("--base", type=int, default=40, help="servers of the demo run that is cloned")
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = HERE / "out" / "whatif"
    work.mkdir(parents=True, exist_ok=True)
    if args.db:
        db = Path(args.db).resolve()  # the command runs in the benchmark's folder
        with duckdb.connect(str(db), read_only=True) as conn:
            n = conn.execute("select count(distinct server_id) from forecasts").fetchone()[0]
    else:
        db = work / f"fleet{args.servers}.duckdb"
        n = inflate(base_store(work, args.base, args.months), db, args.servers)
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in CLONED}
    scenarios = work / "scenarios.yaml"
    scenarios_file(db, scenarios)
    env = {"CAPACITY_DB": str(db)}
    times, out = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = capacity("whatif", str(scenarios), "--json", env=env, cwd=work).stdout
        times.append(time.perf_counter() - t0)
    summary = {o["scenario"]: {k: len(o[k]) for k in ("new", "cleared", "moved", "plan")}
               for o in json.loads(out)}  # fmt: skip
    print(f"servers: {n:,}; rows: " + ", ".join(f"{t} {r:,}" for t, r in rows.items()))
    print(f"capacity whatif ({len(summary)} scenarios) --json: "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
          f"max {max(times):.2f} s over {len(times)} runs")  # fmt: skip
    print(f"changes found: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
