"""`capacity run` as one function, so the command line only parses flags and prints.

`capacity run`, `capacity demo` and every week of `capacity demo --weeks` go through ``run_fleet``:
inputs are checked before any table is touched, batches the ledger says are unchanged are skipped,
the hierarchy is loaded, the rest run in ranges (``runner``), what an earlier CAPACITY_BATCHES left
is tidied, the freshness check is refreshed and the database summarised. Progress goes to ``echo``
as it happens (a range can take minutes); the result carries what is printed last and the exit code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from capacity_assets.demo.ensure import ensure_demo_fleet
from capacity_assets.inputs import files, fingerprint, prometheus
from capacity_assets.inputs.batching import batch_keys, batch_of
from capacity_assets.inputs.hierarchy import read_hierarchy
from capacity_assets.inputs.inspected import Inspected
from capacity_assets.inputs.sources import prepare_metrics
from capacity_assets.notify.digest import address_line
from capacity_assets.pipeline.executors import run_slots
from capacity_assets.pipeline.instance import ensure_home, get_instance
from capacity_assets.pipeline.runner import (
    SERVERS_PER_WORKER,
    RunOutcome,
    Watcher,
    run_batches,
    run_job,
    useful_workers,
)
from capacity_assets.schema import RESOURCES
from capacity_assets.store import history, ledger
from capacity_assets.store.db import drop_other_batches, prepare
from capacity_assets.store.queries import query, tables

if TYPE_CHECKING:
    from capacity_assets.config import CapacitySettings


@dataclass
class FleetRun:
    """What one run of the fleet did. A non-empty ``error`` is why it exits ``code``; ``detail``
    (a failed hierarchy run's steps) explains it and is printed before it, on stderr too."""

    code: int = 0
    error: str = ""
    detail: str = ""
    summary: str = ""  # the end-of-run report, printed before any error
    outcome: RunOutcome = field(default_factory=RunOutcome)
    servers: int = 0  # servers in the batches that were run
    workers: int = 0
    moved: int = 0  # track-record rows rekeyed to a new CAPACITY_BATCHES
    removed: int = 0
    dropped: list[str] = field(default_factory=list)  # batch keys of an earlier CAPACITY_BATCHES
    series_forecast: int = 0


def run_fleet(
    settings: CapacitySettings,
    batches: list[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    verbose: bool = False,
    echo: Callable[[str], object] = print,
    watch: Watcher | None = None,
) -> FleetRun:
    """Materialise ``batches`` (default: all) with ``workers`` processes (default: as many as the
    fleet is worth, up to one per core). ``settings`` must be what the environment says: the runs
    read it again in their own processes. Bad input raises before any table is touched. ``watch``
    (the CLI's progress display) hears how the batches' runs go."""
    cores = os.cpu_count() or 1
    home = ensure_home()
    source, sources = check_inputs(settings, echo)
    echo(
        f"capacity run: {source}; {settings.batches} batches into {settings.database} "
        f"with {workers or f'up to {cores}'} worker(s); Dagster instance {home}"
    )
    get_instance()  # created here, once, before workers race to create its storage
    keys = batch_keys(settings.batches)
    if batches:
        unknown = [b for b in batches if b not in keys]
        if unknown:
            return FleetRun(
                code=2, error=f"unknown batch {unknown[0]!r}; batches are {keys[0]} .. {keys[-1]}"
            )
        keys = [k for k in keys if k in batches]
    with duckdb.connect() as conn:
        digests = fingerprint.server_digests(conn, sources)
    fingerprints = fingerprint.batch_fingerprints(None, sources, settings, digests=digests)
    # the ledger says what each batch's published results were made from, whoever ran it (CLI or UI)
    unchanged = (
        set()
        if force
        else ledger.unchanged(ledger.read(settings.database), fingerprints) & set(keys)
    )
    todo = [k for k in keys if k not in unchanged]
    if unchanged:
        echo(
            f"capacity run: {len(unchanged)} batch(es) unchanged since they were last published "
            f"(same input rows, hierarchy, settings, code and libraries): skipped; --force re-runs them"
        )
    hierarchy = run_job("capacity_hierarchy", verbose=verbose)[0] if todo else None
    if hierarchy is not None and not hierarchy.success:
        return FleetRun(
            code=1,
            error="loading the business hierarchy failed; no batch was run",
            detail=hierarchy.error,
        )
    result = FleetRun()
    running = set(todo)
    result.servers = sum(1 for s in digests if batch_of(s, settings.batches) in running)
    slots = cores if workers else run_slots(settings, cores)  # a shared Dask cluster: its threads
    result.workers = workers or useful_workers(result.servers, slots)  # a number given is kept
    if todo and result.workers < slots and not workers:
        echo(
            f"capacity run: {result.workers} worker(s) for {result.servers} server(s) to run: a worker "
            f"costs about 3 s to start, worth it from {SERVERS_PER_WORKER} servers each"
        )
    if todo and not batches:
        # a new CAPACITY_BATCHES re-runs every batch: their steps then read each server's kept vintages
        # under its new batch (risk calls, accuracy, lifecycles), none lost with a key that goes
        result.moved, result.removed = history.rekey(settings.database, settings.batches)
        if result.moved or result.removed:
            echo(
                f"capacity run: the track record follows CAPACITY_BATCHES={settings.batches}: "
                f"{result.moved:,} rows moved to their servers' batches, {result.removed:,} rows under "
                f"an old batch removed (kept under the new one)"
            )
    result.outcome = outcome = run_batches(
        todo,
        result.workers,
        verbose=verbose,
        echo=echo,
        servers=result.servers,
        servers_per_run=settings.servers_per_run,
        inspection=Inspected(
            sources, {s: batch_of(s, settings.batches) for s in digests}, fingerprints
        ),
        watch=watch,
    )
    outcome.unchanged = sorted(unchanged)
    if not batches:  # batches from an earlier CAPACITY_BATCHES would count their servers twice
        result.dropped = dropped = drop_other_batches(
            settings.database, batch_keys(settings.batches)
        )
        if dropped:
            echo(
                f"capacity run: removed {len(dropped)} batch(es) left by an earlier CAPACITY_BATCHES: "
                f"{', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}"
            )
    # after every run, even one with nothing to do: published batches go stale while nothing changes,
    # and the Dagster UI must show that as the summary does
    run_job("capacity_freshness")
    report = run_summary(settings, outcome)
    result.summary, result.series_forecast = report.text, report.series_forecast
    if outcome.failed:
        result.code = 1
        result.error = (
            f"{len(outcome.failed)} of {len(keys)} batches failed: "
            f"{', '.join(b.batch for b in outcome.failed)}"
        )
    elif report.series_forecast == 0:
        result.code = 1
        result.error = (
            "nothing could be forecast: every series is too short or invalid "
            "(see skipped_series and the warnings above)"
        )
    return result


# --- preflight: a bad input fails fast with the file's name, before the database is touched --------


def check_inputs(
    settings: CapacitySettings, echo: Callable[[str], object] = print
) -> tuple[str, list[files.SourceFile]]:
    """Validate metrics files, hierarchy and database; return a one-line description of the source
    and the inspected metrics files (their fingerprints decide what is re-run)."""
    if settings.uses_demo and ensure_demo_fleet(settings):
        echo(
            f"capacity: no CAPACITY_METRICS given: wrote the built-in demo fleet to {settings.demo_dir}"
        )
    if settings.uses_prometheus:
        echo(
            f"capacity: reading daily values from {prometheus.base_url(settings.metrics)} into {settings.prom_cache}"
        )
    conn = duckdb.connect()
    sources = files.inspect_metrics(
        conn, prepare_metrics(settings, log=lambda m: echo(f"capacity: {m}"))
    )
    if settings.hierarchy_path:
        read_hierarchy(conn, settings.hierarchy_path)
    prepare(settings.database)  # refuses a file that is not DuckDB, untouched; PostgreSQL: schemas
    notes = [
        f"{len(sources)} file{'s' if len(sources) != 1 else ''}",
        f"{sum(f.rows for f in sources):,} rows",
    ]
    scaled = [f.path for f in sources if f.scale != 1]
    if scaled:
        notes.append(f"{len(scaled)} given as fractions 0–1, scaled x100: {', '.join(scaled)}")
    no_id = sum(f.no_server_id for f in sources)
    if no_id:
        notes.append(f"{no_id} rows without server_id ignored")
    what = "demo fleet" if settings.uses_demo else "metrics"
    conn.close()
    return f"{what} {settings.metrics_glob} ({'; '.join(notes)})", sources


# --- the end-of-run summary a planner reads: what was forecast, who won, how good, what is at risk --


@dataclass
class Summary:
    text: str
    series_forecast: int  # 0 fails the command: a run that forecasts nothing is not a success


def run_summary(settings: CapacitySettings, outcome: RunOutcome) -> Summary:
    """The whole database, not only this run: batches not run now keep their last published results,
    and the settings shown are the ledger's (what the results were made with), not this shell's."""
    db = settings.database
    have = tables(db)
    ok = [b.batch for b in outcome.batches if b.success]
    lines = [
        f"\nSummary: {len(ok)}/{len(outcome.batches)} batches run and succeeded in {outcome.seconds:.0f}s "
        f"({settings.database})"
        if outcome.batches
        else f"\nSummary: no batch needed running ({settings.database})"
    ]
    if outcome.unchanged:
        lines.append(
            f"  unchanged, not re-run: {len(outcome.unchanged)} batches ({', '.join(outcome.unchanged[:5])}"
            f"{', ...' if len(outcome.unchanged) > 5 else ''})"
        )
    series = 0
    if ledger.TABLE in have:
        book = ledger.read(db)
        used = ledger.run_settings(book)
        settings = dataclasses.replace(
            settings,
            **{k: v for k, v in used.items() if hasattr(settings, k) and not isinstance(v, list)},
        )
        mixed = {k: v for k, v in used.items() if isinstance(v, list)}
        if mixed:
            lines.append(
                "  batches were computed with different settings: "
                + "; ".join(f"{k} {v}" for k, v in mixed.items())
            )
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        stale = ledger.stale(book, batch_keys(settings.batches), now)
        if len(book):
            oldest = book.sort_values("published_at").iloc[0]
            lines.append(
                f"  oldest batch: {oldest['batch']}, published {pd.Timestamp(oldest['published_at']):%Y-%m-%d %H:%M} UTC"
            )
        if stale:
            old = any("never" not in why for why in stale.values())  # published once, not since
            lines.append(
                f"  NOT FRESH: {len(stale)} batch(es): "
                + "; ".join(f"{b} {why}" for b, why in list(stale.items())[:5])
                + (
                    " (unchanged input is not re-run: `capacity run --force` re-publishes it; or check that "
                    "the export is still being updated)"
                    if old
                    else ""
                )
            )
    if "processed_data" in have:
        n = query(
            db,
            "select count(distinct (server_id, resource)) as n, count(distinct server_id) as s from processed_data",
        ).iloc[0]
        lines.append(f"  series processed: {int(n['n'])} on {int(n['s'])} servers")
    if "skipped_series" in have:
        k = int(query(db, "select count(*) as n from skipped_series").iloc[0]["n"])
        if k:
            lines.append(
                f"  series skipped (too short to forecast, or no recent data; see table skipped_series): {k}"
            )
    if "champions" in have and int(query(db, "select count(*) as n from champions").iloc[0]["n"]):
        c = query(db, "select champion, count(*) as n from champions group by 1 order by 2 desc")
        series = int(c["n"].sum())
        med = float(query(db, "select median(champion_mape) as m from champions").iloc[0]["m"] or 0)
        wins = ", ".join(
            f"{r.champion} {int(r.n)} ({r.n / max(series, 1):.0%})" for r in c.itertuples()
        )
        lines.append(f"  series forecast: {series}; wins: {wins}; median champion MAPE {med:.1f}%")
        lines.append(f"  {_resources_forecast(db)}")
        flagged = int(
            query(
                db,
                "select count(*) as n from champions where champion_mape > ?",
                [settings.mape_warn],
            ).iloc[0]["n"]
        )
        low = int(query(db, "select count(*) as n from champions where trust = 'low'").iloc[0]["n"])
        lines.append(
            f"  series with champion MAPE above {settings.mape_warn:g}% (bad-MAPE check): {flagged}; "
            f"low trust (backtest error could cross the threshold): {low}"
        )
    if "risk_exceptions" in have:
        r = query(db, "select severity, count(*) as n from risk_exceptions group by 1 order by 1")
        total = int(r["n"].sum())
        sev = ", ".join(f"{x.severity} {int(x.n)}" for x in r.itertuples()) or "none"
        lines.append(
            f"  at risk within {settings.risk_days} days (upper bound >= {_thresholds(db, settings)}): "
            f"{total} series ({sev})"
        )
        d = query(
            db,
            """select department, count(*) filter (where severity = 'critical') as critical,
                                count(*) filter (where severity = 'warning') as warning
                         from risk_exceptions group by 1 order by critical desc, warning desc, department limit 10""",
        )
        for x in d.itertuples():
            lines.append(
                f"    {x.department}: {int(x.critical)} critical, {int(x.warning)} warning"
            )
        lines.append(f"  {address_line(query(db, 'select * from risk_exceptions'))}")
        lines.append(
            "  department lists: capacity report --out reports/   dashboard: capacity dashboard"
        )
    return Summary("\n".join(lines), series)


def _resources_forecast(db: str) -> str:
    """Which resources were forecast, and which none of (a Prometheus query that matched nothing)."""
    n = query(db, "select resource, count(*) as n from champions group by 1")
    n = dict(zip(n["resource"], n["n"].astype(int)))
    text = "resources forecast: " + ", ".join(f"{r} ({n[r]} series)" for r in RESOURCES if r in n)
    none = [r for r in RESOURCES if r not in n]
    return text + (f"; none of {', '.join(none)}" if none else "")


def _thresholds(db: str, settings: CapacitySettings) -> str:
    """The thresholds the series were judged against: CAPACITY_THRESHOLD, the per-resource levels
    that differ from it, and how many at-risk series had a level of their own from the hierarchy."""
    overrides = {
        r: v
        for r, v in settings.threshold_per_resource.items()
        if v is not None and v != settings.threshold
    }
    text = f"{settings.threshold:g}%" + "".join(f", {r} {v:g}%" for r, v in overrides.items())
    t = query(db, "select resource, threshold from risk_exceptions")
    expected = t["resource"].map(lambda r: overrides.get(r, settings.threshold))
    own = int((t["threshold"].astype(float) - expected.astype(float)).abs().gt(1e-9).sum())
    return text + (f"; {own} at-risk series at their server's own level" if own else "")
