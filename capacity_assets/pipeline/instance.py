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


_INSTANCES: dict = {}  # DAGSTER_HOME -> its instance: opening one costs about a second of CPU


def get_instance():
    """The instance of DAGSTER_HOME, opened once per process; the CLI opens it before any worker
    does, so its storage is created once (parallel processes race otherwise)."""
    from dagster import DagsterInstance

    home = str(ensure_home())
    if home not in _INSTANCES:
        _INSTANCES[home] = DagsterInstance.get()
    return _INSTANCES[home]
