"""Checks made before any table is touched, so a bad input fails fast with the file's name."""
from __future__ import annotations

import duckdb

from capacity_assets import demo_fleet, ingest
from capacity_assets.storage import connect
from capacity_assets.dblock import db_lock


def check_inputs(settings) -> tuple[str, list[ingest.SourceFile]]:
    """Validate metrics files, hierarchy and database; return a one-line description of the source
    and the inspected metrics files."""
    if demo_fleet.ensure(settings):
        print(f"capacity: no CAPACITY_METRICS given: wrote the built-in demo fleet to {settings.demo_dir}")
    conn = duckdb.connect()
    files = ingest.inspect_metrics(conn, settings.metrics_glob)
    if settings.hierarchy_path:
        ingest.read_table(conn, settings.hierarchy_path, ingest.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY")
    with db_lock(settings.db):  # a file that is not DuckDB is refused here, untouched
        connect(settings.db).close()
    notes = [f"{len(files)} file{'s' if len(files) != 1 else ''}", f"{sum(f.rows for f in files):,} rows"]
    scaled = [f.path for f in files if f.scale != 1]
    if scaled:
        notes.append(f"{len(scaled)} given as fractions 0–1, scaled x100: {', '.join(scaled)}")
    no_id = sum(f.no_server_id for f in files)
    if no_id:
        notes.append(f"{no_id} rows without server_id ignored")
    what = "demo fleet" if settings.uses_demo else "metrics"
    conn.close()
    return f"{what} {settings.metrics_glob} ({'; '.join(notes)})", files
