"""Where a `capacity run` spent its time, from the Dagster event log of its instance.

    python benchmarks/profile_run.py DAGSTER_HOME [--started EPOCH --ended EPOCH] [--db CAPACITY_DB]

Every gap between two consecutive events of a step is charged to what the later event closes:

* ``io_read``: loading an input through the IO manager (gap closed by LOADED_INPUT), and
  processed_data's read of the input files (its ``read_seconds`` metadata, taken out of its compute);
* ``io_write``: the IO manager's handle_output: staging the output in DuckDB and, for the last
  table of a batch, publishing it (gap from STEP_OUTPUT to the first ASSET_MATERIALIZATION);
* ``fitting``: the compute of the fitted contenders' steps (``<engine>_results``, the combination
  excluded) from the last input to their output;
* ``other``: every other asset's compute (cleaning, tournament, golden record, risk, track
  record, ledger, checks' evaluation);
* ``dagster``: Dagster's own bookkeeping inside the run: run start (planned materialisation events,
  one per asset and batch, resource init), step start, input type checks, writing one
  materialisation event per asset and batch, handled-output and check events, step success, run end.

Outside the runs, from the command's start and end (``--started``/``--ended``, epoch seconds) and
the runs' first and last events: the CLI before the hierarchy run (imports, preflight, fingerprint
scan of the input, instance), the hierarchy run, the gap before the batch runs start (worker spawn,
imports, definitions), the gap after them, and the freshness run and the summary.

Run as a script it prints the table; ``breakdown(home)`` returns it for other benchmarks.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

CATEGORIES = ("dagster", "io_read", "io_write", "fitting", "other")


def _type(e) -> str:
    return e.dagster_event.event_type_value if e.dagster_event else "LOG"


def _engines() -> set[str]:
    from capacity_assets.config import load

    return {f"{n}_results" for n in load().contenders}


def run_breakdown(instance, run, fitted: set[str]) -> dict:
    """{category: seconds}, {step: {category: seconds}}, (first, last) event time of one run."""
    records = instance.all_logs(run.run_id)
    by_step: dict[str, list] = defaultdict(list)
    for e in records:
        by_step[e.step_key].append(e)
    steps: dict[str, dict[str, float]] = {}
    read_meta = 0.0
    for step, events in by_step.items():
        if step is None:
            continue
        # the run's start plans every step's materialisations under that step's key: start at STEP_START
        starts = [i for i, e in enumerate(events) if _type(e) == "STEP_START"]
        events = events[starts[0] :] if starts else []
        cat, phase = defaultdict(float), "inputs"
        compute = "fitting" if step in fitted else "other"
        for prev, e in zip(events, events[1:]):
            t, gap = _type(e), e.timestamp - prev.timestamp
            if t == "LOADED_INPUT":
                cat["io_read"] += gap
            elif t in (
                "STEP_INPUT",
                "STEP_SUCCESS",
                "STEP_FAILURE",
                "HANDLED_OUTPUT",
            ) or t.endswith("_PLANNED"):
                cat["dagster"] += gap
            elif phase == "output" and t in ("LOG", "ASSET_MATERIALIZATION"):
                cat["io_write"] += (
                    gap  # the IO manager's handle_output ends where the first materialisation is written
                )
            elif phase == "events":
                cat["dagster"] += gap  # one materialisation event per asset and batch
            else:  # compute: the asset's code (and a check's, for ASSET_CHECK_EVALUATION)
                cat[compute] += gap
            if t == "STEP_OUTPUT":
                phase = "output"
            elif t == "ASSET_MATERIALIZATION" and phase == "output":
                phase = "events"
            elif t == "HANDLED_OUTPUT":
                phase = "compute"  # a generator step resumes: its next output or its checks
            elif t not in ("LOADED_INPUT", "STEP_INPUT") and phase == "inputs":
                phase = "compute"
            if (
                t == "ASSET_MATERIALIZATION"
                and step == "processed_data"
                and not read_meta
                and e.dagster_event.asset_key.path[-1] == "processed_data"
            ):
                meta = e.dagster_event.event_specific_data.materialization.metadata
                if "read_seconds" in meta:
                    read_meta = float(meta["read_seconds"].value)
        steps[step] = dict(cat)
    if "processed_data" in steps and read_meta:
        moved = min(read_meta, steps["processed_data"].get("other", 0.0))
        steps["processed_data"]["other"] -= moved
        steps["processed_data"]["io_read"] = steps["processed_data"].get("io_read", 0.0) + moved
    total = defaultdict(float)
    for cat in steps.values():
        for k, v in cat.items():
            total[k] += v
    first, last = records[0].timestamp, records[-1].timestamp
    in_steps = sum(total.values())
    total["dagster"] += (last - first) - in_steps  # run start/end, between steps
    return {"total": dict(total), "steps": steps, "span": (first, last), "read_seconds": read_meta}


def breakdown(
    home: str | os.PathLike, started: float | None = None, ended: float | None = None
) -> dict:
    os.environ["DAGSTER_HOME"] = str(Path(home).resolve())
    from dagster import DagsterInstance

    fitted = _engines()
    out = {
        "runs": [],
        "by_category": defaultdict(float),
        "by_step": defaultdict(lambda: defaultdict(float)),
        "timeline": [],
    }
    with DagsterInstance.get() as instance:
        runs = list(instance.get_runs())
        spans = {}
        for run in runs:
            b = run_breakdown(instance, run, fitted)
            spans[run.run_id] = (run.job_name, *b["span"])
            if run.job_name == "capacity_forecast":
                out["runs"].append(
                    {
                        "run_id": run.run_id,
                        "range": (
                            run.tags.get("dagster/asset_partition_range_start"),
                            run.tags.get("dagster/asset_partition_range_end"),
                        ),
                        "seconds": b["span"][1] - b["span"][0],
                        **b["total"],
                        "read_seconds": b["read_seconds"],
                    }
                )
                for k, v in b["total"].items():
                    out["by_category"][k] += v
                for step, cat in b["steps"].items():
                    for k, v in cat.items():
                        out["by_step"][step][k] += v
    # the command's timeline: serial parts around the parallel batch runs
    forecast = [s for s in spans.values() if s[0] == "capacity_forecast"]
    hier = [s for s in spans.values() if s[0] == "capacity_hierarchy"]
    fresh = [s for s in spans.values() if s[0] == "capacity_freshness"]
    if forecast:
        f0, f1 = min(s[1] for s in forecast), max(s[2] for s in forecast)
        t = []
        if started is not None and hier:
            t.append(
                ("CLI start: imports, preflight, fingerprints, instance", hier[0][1] - started)
            )
        if hier:
            t.append(("hierarchy run", hier[0][2] - hier[0][1]))
            t.append(("until the first batch run starts (worker spawn + imports)", f0 - hier[0][2]))
        t.append(("batch runs, first start to last end", f1 - f0))
        if fresh:
            t.append(("after the batch runs until the freshness run", fresh[-1][1] - f1))
            t.append(("freshness run", fresh[-1][2] - fresh[-1][1]))
            if ended is not None:
                t.append(("summary and exit", ended - fresh[-1][2]))
        elif ended is not None:
            t.append(("after the batch runs", ended - f1))
        out["timeline"] = t
    return out


def report(b: dict, print_=print) -> None:
    cats = b["by_category"]
    total = sum(cats.values()) or 1.0
    print_(
        f"batch runs: {len(b['runs'])}; step-seconds by category, summed over the runs "
        f"(wall of the parallel part ~ sum / workers):"
    )
    for k in CATEGORIES:
        print_(f"  {k:<9} {cats.get(k, 0.0):8.1f}s  {cats.get(k, 0.0) / total:6.1%}")
    print_(f"  {'total':<9} {total:8.1f}s")
    for r in b["runs"]:
        print_(
            f"  run {r['range'][0]}..{r['range'][1]}: {r['seconds']:.1f}s (input read {r['read_seconds']:.2f}s)"
        )
    print_("by step (summed over runs): " + ", ".join(f"{k}" for k in CATEGORIES))
    rows = sorted(b["by_step"].items(), key=lambda kv: -sum(kv[1].values()))
    for step, cat in rows:
        print_(
            f"  {step:<22} {sum(cat.values()):7.1f}s  "
            + "  ".join(f"{cat.get(k, 0.0):6.1f}" for k in CATEGORIES)
        )
    if b["timeline"]:
        print_("command timeline (wall):")
        for what, s in b["timeline"]:
            print_(f"  {what:<58} {s:7.1f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("home", help="the DAGSTER_HOME of the run")
    ap.add_argument("--started", type=float, help="epoch seconds when the command started")
    ap.add_argument("--ended", type=float, help="epoch seconds when it ended")
    args = ap.parse_args()
    report(breakdown(args.home, args.started, args.ended))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
