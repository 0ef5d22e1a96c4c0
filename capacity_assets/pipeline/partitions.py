"""The Dagster partitions: one static key per server batch, and how many batches one run covers.

Both come from the settings a code location is built from (``build_defs``), never from the
environment at import time, so two sets of settings in one process give two consistent layouts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import dagster as dg

from capacity_assets.inputs.batching import batch_keys

# tells the IO manager which column holds the partition key, so a batch is replaced in place
STORED_BY_BATCH = {"partition_expr": "batch"}


@dataclass(frozen=True)
class Layout:
    """The batch partitions and the backfill policy every batch asset shares."""

    batches: dg.StaticPartitionsDefinition
    per_run: int

    @property
    def backfill(self) -> dg.BackfillPolicy:
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=self.per_run)

    def per_batch(self, metadata: dict | None = None) -> dict:
        """The keyword arguments of an asset stored by batch."""
        return {
            "partitions_def": self.batches,
            "backfill_policy": self.backfill,
            "metadata": metadata or STORED_BY_BATCH,
            "kinds": {"duckdb"},
        }


def layout(settings) -> Layout:
    """A UI backfill of every batch becomes one run per core, each covering a contiguous range of
    batches, so Dagster's per-run cost (process, imports, run bookkeeping, IO manager connections)
    is paid once per worker, not once per batch; CAPACITY_BATCHES_PER_RUN makes the runs smaller
    (`capacity ui` sets it from the fleet size, so no run covers more servers than `capacity run`'s)."""
    per_run = settings.batches_per_run or max(
        1, math.ceil(settings.batches / (os.cpu_count() or 1))
    )
    return Layout(dg.StaticPartitionsDefinition(batch_keys(settings.batches)), per_run)
