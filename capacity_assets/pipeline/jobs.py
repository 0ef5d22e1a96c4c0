"""Jobs and the weekly schedule."""
from __future__ import annotations

import dagster as dg

from capacity_assets.pipeline.partitions import batches

# every asset partitioned by batch; business_hierarchy is unpartitioned and has its own job
forecast_job = dg.define_asset_job(
    "capacity_forecast", selection=dg.AssetSelection.all() - dg.AssetSelection.assets("business_hierarchy"),
    description="processed_data through risk_exceptions for one server batch (one run per batch).")
hierarchy_job = dg.define_asset_job(
    "capacity_hierarchy", selection=dg.AssetSelection.assets("business_hierarchy"),
    description="Reload the business hierarchy (department, app manager) from CAPACITY_HIERARCHY.")


@dg.schedule(job=forecast_job, cron_schedule="0 6 * * 1", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every Monday 06:00 UTC: refresh every batch (hierarchy first, at 05:30).")
def weekly_forecast(context: dg.ScheduleEvaluationContext):
    for key in batches.get_partition_keys():
        yield dg.RunRequest(run_key=f"{context.scheduled_execution_time:%Y-%m-%d}-{key}", partition_key=key)


weekly_hierarchy = dg.ScheduleDefinition(job=hierarchy_job, cron_schedule="30 5 * * 1", execution_timezone="UTC",
                                         default_status=dg.DefaultScheduleStatus.RUNNING)
