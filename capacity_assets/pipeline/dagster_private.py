"""Every use of Dagster's private API, in one place.

The staged IO manager needs what Dagster's public API does not give: the DbIOManager base and its
TableSlice (dagster-duckdb builds on them too), the run id of an input's step, and the set of
partitioned assets a run will write. The Dask executor (``pipeline/executors``) hands dagster-dask
a PlanOrchestrationContext of its own, whose job name carries the run id. A Dagster upgrade that moves any of these fails
``capacity_assets_tests/pipeline/test_dagster_private.py`` loudly instead of a run quietly never
publishing.
"""

from __future__ import annotations

from dagster._core.execution.context.system import PlanOrchestrationContext  # noqa: F401
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice  # noqa: F401

__all__ = [
    "DbIOManager",
    "DbTypeHandler",
    "TableSlice",
    "PlanOrchestrationContext",
    "run_id_of",
    "expected_tables",
]


def run_id_of(context) -> str | None:
    """The run an input is loaded in, or None outside a run (tests, notebooks)."""
    try:
        return context.step_context.run_id
    except Exception:  # noqa: BLE001 - no step context at all
        return None


def expected_tables(context) -> set[str]:
    """The partitioned tables this run will write for a batch: publish once all are staged."""
    step = context.step_context
    graph = step.job_def.asset_layer.asset_graph
    keys = step.dagster_run.asset_selection or step.job_def.asset_layer.selected_asset_keys
    return {k.path[-1] for k in keys if graph.has(k) and graph.get(k).is_partitioned}
