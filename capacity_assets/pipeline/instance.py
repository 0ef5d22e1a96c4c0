"""The persistent Dagster instance (DAGSTER_HOME) shared by `capacity run` and `capacity ui`."""
from __future__ import annotations

import os
from pathlib import Path

DAGSTER_YAML = """\
# written by capacity_assets; edit freely, it is not overwritten
telemetry:
  enabled: false
concurrency:
  runs:
    # queued runs (a UI backfill of every batch) start at most this many at once: one per core
    max_concurrent_runs: {cores}
python_logs:
  managed_python_loggers: [capacity_assets]
"""


def ensure_home() -> Path:
    """Set DAGSTER_HOME (default ./.dagster) and write its dagster.yaml once."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML.format(cores=os.cpu_count() or 2))
    return home


def get_instance():
    """Create the instance's storage once, before any parallel process opens it (they race otherwise)."""
    from dagster import DagsterInstance

    ensure_home()
    return DagsterInstance.get()
