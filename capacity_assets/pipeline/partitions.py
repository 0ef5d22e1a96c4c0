"""The Dagster partitions: one static key per server batch (count from CAPACITY_BATCHES), and how
many batches one run covers."""

from __future__ import annotations

import math
import os
import warnings

import dagster as dg

from capacity_assets.config import CapacitySettings, batch_count
from capacity_assets.inputs.batching import batch_keys

batches = dg.StaticPartitionsDefinition(batch_keys(batch_count()))
# tells the IO manager which column holds the partition key, so a batch is replaced in place
STORED_BY_BATCH = {"partition_expr": "batch"}
# a UI backfill of every batch becomes one run per core, each covering a contiguous range of
# batches, so Dagster's per-run cost (process, imports, run bookkeeping, IO manager connections)
# is paid once per worker, not once per batch; CAPACITY_BATCHES_PER_RUN makes the runs smaller
# (`capacity ui` sets it from the fleet size, so no run covers more servers than `capacity run`'s)
BATCHES_PER_RUN = CapacitySettings.from_env().batches_per_run or max(
    1, math.ceil(batch_count() / (os.cpu_count() or 1))
)
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=BATCHES_PER_RUN)
# Dagster marks backfill policies (and a sensor's owners) beta; they are its documented way to batch
# partitions, chosen knowingly here, so their notices are noise in every process that loads the code
warnings.filterwarnings("ignore", category=dg.BetaWarning)
PER_BATCH = {
    "partitions_def": batches,
    "backfill_policy": BACKFILL,
    "metadata": STORED_BY_BATCH,
    "kinds": {"duckdb"},
}
