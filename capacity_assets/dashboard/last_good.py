"""The data each view loaded last, shown while a pipeline run holds the database.

A run can hold the database longer than a visitor should wait, so a view waits at most
CAPACITY_DASHBOARD_LOCK_TIMEOUT (carried by the ``Database`` it reads) and then shows what it loaded
last, rather than an error or a blank page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import streamlit as st

from capacity_assets.store.db import Database, DatabaseBusy, StorageError

LAST_GOOD_MAX = 256  # entries kept (the oldest go first): a deep dive per server viewed adds one


class NotLoaded(Exception):
    """The database was busy and this view has never been loaded in this session."""


def _is_lock_error(e: Exception) -> bool:
    """A run (or a DuckDB shell, ``connect``'s 'locked by another program') holds the database: worth
    showing the last data for; any other storage error is a real one."""
    return isinstance(e, DatabaseBusy) or (isinstance(e, StorageError) and "lock" in str(e).lower())


@st.cache_resource(show_spinner=False)
def _last_good() -> tuple[dict, threading.Lock]:
    """The last value any session loaded, per database, view and arguments: shared by the process, so
    a reload or a new visitor during a long write sees the last data instead of a blank page. Sessions
    run in threads: the lock keeps the eviction from seeing the dict change under it."""
    return {}, threading.Lock()


class Loader:
    """One script run's reads of ``db`` at version ``ver``. Made anew by every run, so ``busy`` (a
    query timed out) holds for one run of one session only: after one timeout the run does not wait
    again for every other query, and the next run tries the database afresh."""

    def __init__(self, db: Database, ver) -> None:
        self.db, self.ver = db, ver
        self.busy = False

    def load(self, name: str, fn: Callable, *args):
        """``fn(db, ver, *args)``, or the last value loaded for ``name``/``args`` when a run holds
        the database longer than ``db`` may wait (``_last_good``); ``NotLoaded`` when there is none."""
        last, lock = _last_good()
        key = (self.db, name, args)
        if not self.busy:
            try:
                value = fn(self.db, self.ver, *args)
                with lock:
                    last.pop(key, None)
                    last[key] = value
                    while len(last) > LAST_GOOD_MAX:
                        last.pop(next(iter(last)), None)
                return value
            except (DatabaseBusy, StorageError) as e:
                if not _is_lock_error(e):
                    raise
                self.busy = True
        with lock:
            if key in last:
                return last[key]
        raise NotLoaded(name)
