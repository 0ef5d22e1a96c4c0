"""Server batches: the unit of partitioning, parallelism and re-materialisation.

A server's batch is a stable hash of its id (md5, not Python's salted ``hash``), so a server never
moves between batches when others are added or removed, and every process agrees on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def batch_keys(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"batch_{i:0{width}d}" for i in range(n)]


def batch_index(key: str) -> int:
    """batch_07 -> 7: the key's place in ``batch_keys`` order."""
    return int(key.rsplit("_", 1)[-1])


def batch_of(server_id: str, n: int) -> str:
    digest = hashlib.md5(str(server_id).encode("utf-8")).digest()
    return batch_keys(n)[int.from_bytes(digest[:8], "big") % n]


def servers_in_batch(server_ids: Iterable[str], batch: str, n: int) -> list[str]:
    return [s for s in server_ids if batch_of(s, n) == batch]
