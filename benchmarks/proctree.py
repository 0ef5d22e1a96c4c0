"""CPU of a command and of every process it started, including processes that outlive it.

`capacity run`'s workers fork from a fork server that the command starts and that exits just after
it, so neither the command's rusage nor a plain RUSAGE_CHILDREN of the benchmark sees their CPU. As a
child subreaper (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``) the benchmark inherits such orphans and,
by reaping them, adds their CPU (and their children's) to its own RUSAGE_CHILDREN.
"""

from __future__ import annotations

import ctypes
import os
import resource
import time

PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (call once, before starting them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_orphans(timeout: float = 30.0) -> None:
    """Wait for every remaining child (adopted orphans) so their CPU is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def children_cpu() -> float:
    """User + system seconds of every reaped child so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
