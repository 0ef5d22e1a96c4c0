"""Making sure the built-in demo fleet exists when no metrics path is configured."""

from __future__ import annotations

import glob
import os

import pandas as pd

from capacity_assets.store.db import db_lock

DEFAULT_SERVERS, DEFAULT_MONTHS = 200, 36


def yesterday() -> pd.Timestamp:
    """The demo's last history day: yesterday (UTC), so "days to breach" counts from about today,
    as it does with a real export."""
    return pd.Timestamp.now(tz="UTC").normalize().tz_localize(None) - pd.Timedelta(days=1)


def ensure_demo_fleet(
    settings, servers: int = DEFAULT_SERVERS, months: int = DEFAULT_MONTHS
) -> bool:
    """Write the demo fleet once (under a lock, so parallel batches don't race); True if written."""
    if not settings.uses_demo:
        return False
    pattern = settings.metrics_glob
    with db_lock(os.path.join(settings.demo_dir, "fleet")):
        if glob.glob(pattern) and os.path.exists(settings.hierarchy_path):
            return False
        from capacity_assets.demo.fleet import write_fleet

        write_fleet(
            settings.demo_dir, servers=servers, months=months, seed=settings.seed, end=yesterday()
        )
        return True
