"""Checks made before any table is touched, so a bad input fails fast with the file's name."""
from __future__ import annotations

import duckdb

from capacity_assets import demo_fleet, ingest
from capacity_assets.storage import connect
from capacity_assets.dblock import db_lock


def check_inputs(settings) -> str:
    """Validate metrics files, hierarchy and database; return a one-line description of the source."""
    if demo_fleet.ensure(settings):
        print(f"capacity: no CAPACITY_METRICS given: wrote the built-in demo fleet to {settings.demo_dir}")
    conn = duckdb.connect()
    files = ingest.inspect_metrics(conn, settings.metrics_glob)
    if settings.hierarchy_path:
        ingest.read_table(conn, settings.hierarchy_path, ingest.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY")
    with db_lock(settings.db):  # a file that is not DuckDB is refused here, untouched
        connect(settings.db).close()
    scaled = f" ({len([f for f in files if f.scale != 1])} fraction-scaled)" if any(f.scale != 1 for f in files) else ""
    what = "demo fleet" if settings.uses_demo else "metrics"
    return f"{what} {settings.metrics_glob} ({len(files)} file{'s' if len(files) != 1 else ''}{scaled})"
