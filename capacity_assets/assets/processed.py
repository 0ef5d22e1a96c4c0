"""Stage 1: business_hierarchy, and processed_data / skipped_series per server batch."""

import time

import dagster as dg
import duckdb
import pandas as pd

from capacity_assets import checks, cleaning, demo_fleet, ingest
from capacity_assets.batching import servers_in_batch
from capacity_assets.config import CapacitySettings
from capacity_assets.engines.base import min_history_days
from capacity_assets.risk import hierarchy_table
from capacity_assets.partitions import batches

PARTITIONED = {"partition_expr": "batch"}


@dg.asset(group_name="ingest", kinds={"duckdb"},
          description="Who owns each server: department, app manager and any extra columns of the "
                      "hierarchy file (CAPACITY_HIERARCHY). Servers missing here are reported as Unassigned.")
def business_hierarchy(context: dg.AssetExecutionContext, settings: CapacitySettings) -> dg.Output[pd.DataFrame]:
    demo_fleet.ensure(settings)
    path = settings.hierarchy_path
    conn = duckdb.connect()
    raw = (ingest.read_table(conn, path, ingest.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY") if path
           else pd.DataFrame(columns=list(ingest.HIERARCHY_COLUMNS)))
    if not path:
        context.log.warning("No CAPACITY_HIERARCHY given: every server will be reported as Unassigned")
    table, problems = hierarchy_table(raw)
    for p in problems:
        context.log.warning(p)
    return dg.Output(table, metadata={
        "source": path or "(none)", "servers": len(table),
        "departments": int(table["department"].nunique()) if len(table) else 0,
        "problems": "\n".join(problems) or "none",
    })


@dg.multi_asset(
    outs={
        "processed_data": dg.AssetOut(metadata=PARTITIONED, kinds={"duckdb"}, description=(
            "One value per server, resource and day (CAPACITY_DAILY_AGG of the raw samples), on a complete "
            "calendar with gaps interpolated (filled = true) and values clipped to 0–100.")),
        "skipped_series": dg.AssetOut(metadata=PARTITIONED, kinds={"duckdb"}, description=(
            "Series too short to backtest, with the reason; they are kept in processed_data but not forecast.")),
    },
    partitions_def=batches, group_name="ingest", check_specs=checks.PROCESSED_CHECKS,
)
def processed_data(context: dg.AssetExecutionContext, settings: CapacitySettings):
    batch = context.partition_key
    started = time.monotonic()
    demo_fleet.ensure(settings)
    conn = duckdb.connect()
    files = ingest.inspect_metrics(conn, settings.metrics_glob)
    servers = servers_in_batch(ingest.distinct_servers(conn, files), batch, settings.batches)
    daily, stats = ingest.read_daily(conn, files, servers, settings.daily_agg)
    full, fill = cleaning.complete_calendar(daily)
    processed = cleaning.processed_frame(full, batch)
    skipped = cleaning.short_series(processed, min_history_days(settings.forecast_config), batch)
    for p in stats.examples:
        context.log.warning(p)
    for f in stats.fraction_files:
        context.log.warning(f"{f}: values look like fractions 0–1 (max <= 1): multiplied by 100")
    if stats.unknown_resource:
        context.log.warning(f"skipped {stats.unknown_resource} rows with unknown resources "
                            f"{stats.unknown_resources} (expected {', '.join(ingest.RESOURCES)})")
    if len(skipped):
        context.log.warning(f"{batch}: {len(skipped)} series too short to forecast, e.g. "
                            f"{skipped['server_id'].iloc[0]}/{skipped['resource'].iloc[0]}: {skipped['reason'].iloc[0]}")
    context.log.info(f"{batch}: {len(servers)} servers, {fill['series']} series, {stats.rows_in} rows in -> "
                     f"{len(processed)} daily values ({fill['days_filled']} filled) in {time.monotonic() - started:.1f}s")
    yield dg.Output(processed, output_name="processed_data", metadata={
        "servers": len(servers), "series": fill["series"], "rows_in": stats.rows_in,
        "rows_out": len(processed), "duplicates_dropped": int(stats.duplicates),
        "values_clipped": int(stats.clipped), "days_filled": fill["days_filled"],
        "long_gaps_filled": fill["long_gaps"], "bad_timestamps_dropped": int(stats.bad_timestamp),
        "missing_values_dropped": int(stats.missing_value),
        "non_numeric_values_dropped": int(stats.non_numeric_value),
        "unknown_resource_rows_dropped": int(stats.unknown_resource),
        "unknown_resources": str(stats.unknown_resources or "none"),
        "fraction_scaled_files": ", ".join(stats.fraction_files) or "none",
        "daily_agg": settings.daily_agg, "source": settings.metrics_glob,
    })
    yield dg.Output(skipped, output_name="skipped_series", metadata={"series_skipped": len(skipped)})
    yield checks.values_in_range(processed)
    yield checks.one_row_per_day(processed)
    yield checks.batch_not_empty(processed, batch)
