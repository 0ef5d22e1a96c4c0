"""Checks made before any table is touched, so a bad input fails fast with the file's name."""

from __future__ import annotations

import duckdb

from capacity_assets.demo.ensure import ensure_demo_fleet
from capacity_assets.inputs import files, prometheus
from capacity_assets.inputs.hierarchy import read_hierarchy
from capacity_assets.inputs.sources import prepare_metrics
from capacity_assets.store.db import connect, db_lock


def check_inputs(settings) -> tuple[str, list[files.SourceFile]]:
    """Validate metrics files, hierarchy and database; return a one-line description of the source
    and the inspected metrics files."""
    if settings.uses_demo and ensure_demo_fleet(settings):
        print(
            f"capacity: no CAPACITY_METRICS given: wrote the built-in demo fleet to {settings.demo_dir}"
        )
    if settings.uses_prometheus:
        print(
            f"capacity: reading daily values from {prometheus.base_url(settings.metrics)} into {settings.prom_cache}"
        )
    conn = duckdb.connect()
    sources = files.inspect_metrics(
        conn, prepare_metrics(settings, log=lambda m: print(f"capacity: {m}"))
    )
    if settings.hierarchy_path:
        read_hierarchy(conn, settings.hierarchy_path)
    with db_lock(settings.database):  # a file that is not DuckDB is refused here, untouched
        connect(settings.database).close()
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
