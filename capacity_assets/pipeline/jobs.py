"""Jobs and schedules, built for one layout of batches (``build_defs``)."""

from __future__ import annotations

import dagster as dg

from capacity_assets.inputs.batching import batch_index
from capacity_assets.pipeline.partitions import Layout

# Dagster's run tags for a run over a range of partitions (what its backfills set)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

# every asset partitioned by batch; business_hierarchy is unpartitioned and has its own job, and the
# freshness check looks across all batches, so it runs on its own
FRESHNESS_CHECK = dg.AssetCheckKey(dg.AssetKey("batch_ledger"), "every_batch_fresh")


def ranges(keys: list[str], per_run: int) -> list[tuple[str, str]]:
    """Contiguous (first, last) ranges of batch ``keys``, at most ``per_run`` batches each."""
    keys = sorted(keys, key=batch_index)
    runs, current = [], []
    for k in keys:
        if current and (batch_index(k) != batch_index(current[-1]) + 1 or len(current) == per_run):
            runs.append(current)
            current = []
        current.append(k)
    return [(r[0], r[-1]) for r in runs + ([current] if current else [])]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {RANGE_START: first, RANGE_END: last}


def build_jobs(layout: Layout, tags: dict[str, str] | None = None) -> tuple[list, list]:
    """(jobs, schedules) of the code location; ``tags`` go on every batch run (the result
    settings, which a step on another host checks its own against)."""
    forecast_job = dg.define_asset_job(
        "capacity_forecast",
        selection=(
            dg.AssetSelection.all()
            - dg.AssetSelection.assets("business_hierarchy")
            - dg.AssetSelection.checks(FRESHNESS_CHECK)
        ),
        description="processed_data through batch_ledger for one server batch.",
        tags=tags,
    )
    hierarchy_job = dg.define_asset_job(
        "capacity_hierarchy",
        selection=dg.AssetSelection.assets("business_hierarchy"),
        description="Reload the business hierarchy (department, app manager) from CAPACITY_HIERARCHY.",
    )
    freshness_job = dg.define_asset_job(
        "capacity_freshness",
        selection=dg.AssetSelection.checks(FRESHNESS_CHECK),
        description="Check that every batch was published recently (batch_ledger.every_batch_fresh).",
    )

    @dg.schedule(
        job=forecast_job,
        cron_schedule="0 6 * * 1",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every Monday 06:00 UTC: refresh every batch, one run per core, each covering a "
        "range of batches (hierarchy first, at 05:30).",
    )
    def weekly_forecast(context: dg.ScheduleEvaluationContext):
        for first, last in ranges(layout.batches.get_partition_keys(), layout.per_run):
            yield dg.RunRequest(
                run_key=f"{context.scheduled_execution_time:%Y-%m-%d}-{first}-{last}",
                tags=range_tags(first, last),
            )

    # named as the README names them (Dagster would call them <job>_schedule)
    daily_freshness = dg.ScheduleDefinition(
        name="daily_freshness",
        job=freshness_job,
        cron_schedule="0 7 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    weekly_hierarchy = dg.ScheduleDefinition(
        name="weekly_hierarchy",
        job=hierarchy_job,
        cron_schedule="30 5 * * 1",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return [forecast_job, hierarchy_job, freshness_job], [
        weekly_forecast,
        weekly_hierarchy,
        daily_freshness,
    ]
