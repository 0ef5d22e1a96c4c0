"""Jobs and the weekly schedule."""
from __future__ import annotations

import dagster as dg

from capacity_assets.pipeline.partitions import batches

# every asset partitioned by batch; business_hierarchy is unpartitioned and has its own job, and the
# freshness check looks across all batches, so it runs on its own
FRESHNESS_CHECK = dg.AssetCheckKey(dg.AssetKey("batch_ledger"), "every_batch_fresh")
forecast_job = dg.define_asset_job(
    "capacity_forecast",
    selection=(dg.AssetSelection.all() - dg.AssetSelection.assets("business_hierarchy")
               - dg.AssetSelection.checks(FRESHNESS_CHECK)),
    description="processed_data through batch_ledger for one server batch.")
hierarchy_job = dg.define_asset_job(
    "capacity_hierarchy", selection=dg.AssetSelection.assets("business_hierarchy"),
    description="Reload the business hierarchy (department, app manager) from CAPACITY_HIERARCHY.")


@dg.schedule(job=forecast_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every Monday 06:00 UTC: refresh every batch (hierarchy first, at 05:30).")
def weekly_forecast(context: dg.ScheduleEvaluationContext):
    for key in batches.get_partition_keys():
        yield dg.RunRequest(run_key=f"{context.scheduled_execution_time:%Y-%m-%d}-{key}", partition_key=key)


freshness_job = dg.define_asset_job(
    "capacity_freshness", selection=dg.AssetSelection.checks(FRESHNESS_CHECK),
    description="Check that every batch was published recently (batch_ledger.every_batch_fresh).")
daily_freshness = dg.ScheduleDefinition(job=freshness_job, cron_schedule="0 7 * * *", execution_timezone="UTC",
                                        default_status=dg.DefaultScheduleStatus.RUNNING)

weekly_hierarchy = dg.ScheduleDefinition(job=hierarchy_job, cron_schedule="30 5 * * 1", execution_timezone="UTC",
                                         default_status=dg.DefaultScheduleStatus.RUNNING)
