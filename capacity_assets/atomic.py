"""Replacing a file so that its readers never see half of it.

The reports are read by their owners and the Prometheus cache by every batch, possibly while they
are being rewritten, and a writer can be killed halfway: a reader must find either the old file or
the new one, whole.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Have ``write`` fill a hidden temporary file next to ``path`` (``.<name>.<random>.tmp``, so a
    killed writer's leftovers are recognisable), flush it to disk, and rename it over ``path``.

    The file gets a new file's mode under the umask (usually 0644), not a temporary's private 0600:
    reports are handed on. ``os.open`` applies the umask, so it is never changed, even briefly.
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
