"""Making sure the built-in demo fleet exists when no metrics path is configured."""
from __future__ import annotations

import glob
import os

from capacity_assets.dblock import db_lock

DEFAULT_SERVERS, DEFAULT_MONTHS = 200, 36


def ensure(settings, servers: int = DEFAULT_SERVERS, months: int = DEFAULT_MONTHS) -> bool:
    """Write the demo fleet once (under a lock, so parallel batches don't race); True if written."""
    if not settings.uses_demo:
        return False
    pattern = settings.metrics_glob
    with db_lock(os.path.join(settings.demo_dir, "fleet")):
        if glob.glob(pattern) and os.path.exists(settings.hierarchy_path):
            return False
        from capacity_assets.demo import write_fleet

        write_fleet(settings.demo_dir, servers=servers, months=months, seed=settings.seed)
        return True
