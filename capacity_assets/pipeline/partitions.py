"""The Dagster partitions: one static key per server batch (count from CAPACITY_BATCHES)."""
from __future__ import annotations

import dagster as dg

from capacity_assets.inputs.batching import batch_keys
from capacity_assets.config import batch_count

batches = dg.StaticPartitionsDefinition(batch_keys(batch_count()))
# tells the IO manager which column holds the partition key, so a batch is replaced in place
STORED_BY_BATCH = {"partition_expr": "batch"}
