"""One advisory lock per DuckDB file, shared by every process that touches it.

DuckDB lets one process hold a file read-write, and refuses read-only opens meanwhile. Instead of
racing on DuckDB's own lock (and failing after a few retries in a large backfill), writers take an
exclusive ``flock`` on ``<db>.lock`` and readers (the dashboard) a shared one, each for the few
seconds a read or a write lasts; model fitting never holds it. Waiting is bounded and the timeout
message says which file and what to do.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

DEFAULT_TIMEOUT_S = float(os.environ.get("CAPACITY_LOCK_TIMEOUT", "600"))
NOTICE_AFTER_S = 10.0
log = logging.getLogger(__name__)


class DatabaseBusy(RuntimeError):
    """Another process held the database for longer than we were willing to wait."""


def lock_path(db: str | os.PathLike) -> Path:
    return Path(str(db) + ".lock")


@contextmanager
def db_lock(db: str | os.PathLike, exclusive: bool = True, timeout: float | None = None):
    path = lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    started = time.monotonic()
    deadline = started + timeout
    delay, told = 0.01, False
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and time.monotonic() - started > NOTICE_AFTER_S:
                    log.warning(f"waiting for {db}: another process is using it (lock file {path}); "
                                f"giving up after {timeout:.0f} s")
                    told = True
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(
                        f"{db} is busy: another process has held it for over {timeout:.0f} s "
                        f"(lock file {path}); wait for it to finish or stop it") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        yield
    finally:
        os.close(fd)  # closing releases the lock
