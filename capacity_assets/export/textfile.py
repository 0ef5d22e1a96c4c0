"""Writing the Prometheus file whole from the store, with the newest tables winning.

Every forecast run rewrites it from everything published, and runs of other batches finish at the
same time: were two to read the store and then write in the other order, the older reading would
overwrite the newer one until the next run. Reading and writing therefore happen under one lock,
on a hidden file next to it (the textfile collector reads only ``*.prom``), and the file is
replaced atomically, so a scrape never sees half of it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from capacity_assets.atomic import write_atomic
from capacity_assets.export.prometheus import HORIZONS, exposition
from capacity_assets.store.monitoring import published


def refresh(path: str | os.PathLike, render: Callable[[], str]) -> str:
    """Write ``render()`` to ``path`` atomically, reading and writing under the file's lock; return
    the text written. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = render()
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return text
    finally:
        os.close(fd)  # closing releases the lock


def write_forecasts(db: str, path: str | os.PathLike, server_label: str = "instance") -> dict:
    """The file of everything ``db`` has published (``path`` '-': returned, not written); what it
    holds: {series, at_risk, batches, bytes}."""
    counts: dict[str, int] = {}

    def render() -> str:
        frames = published(db, HORIZONS)
        text = exposition(**frames, server_label=server_label)
        points = frames["points"]
        counts.update(
            series=int((points["day"] == 1).sum()),
            at_risk=len(frames["risk"]),
            batches=len(frames["ledger"]),
            bytes=len(text.encode()),
        )
        return text

    if str(path) == "-":
        text = render()
        return {**counts, "text": text}
    refresh(path, render)
    return counts
