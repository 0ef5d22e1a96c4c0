"""Stage 1: business_hierarchy, and processed_data / skipped_series per server batch."""

import time

import dagster as dg
import duckdb
import pandas as pd

from capacity_assets.pipeline import checks
from capacity_assets.inputs import cleaning
from capacity_assets.demo.ensure import ensure_demo_fleet
from capacity_assets.inputs import files, fingerprint
from capacity_assets.inputs.batching import servers_in_batch
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.forecasting.engines.base import min_history_days
from capacity_assets.inputs.hierarchy import UNASSIGNED, hierarchy_table
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, batches

SHOW = 5  # server ids named in a warning


def _some(ids: list[str]) -> str:
    return ", ".join(map(repr, ids[:SHOW])) + (f" and {len(ids) - SHOW} more" if len(ids) > SHOW else "")


def _coverage(conn, cfg, table: pd.DataFrame) -> tuple[list[str], list[str], str]:
    """Metric servers the hierarchy lacks and hierarchy servers without metrics, so an owner gap is
    seen when the hierarchy loads, not only as 'Unassigned' rows in the risk list."""
    try:
        metric_servers = files.distinct_servers(conn, files.inspect_metrics(conn, cfg.metrics_glob))
    except files.InputError as e:
        return [], [], f"not compared with the metrics ({e})"
    known = set(table["server_id"])
    missing = [s for s in metric_servers if s not in known]
    extra = sorted(known - set(metric_servers))
    return missing, extra, ""


@dg.asset(group_name="ingest", kinds={"duckdb"},
          description="Who owns each server: department, app manager and any extra columns of the "
                      "hierarchy file (CAPACITY_HIERARCHY). Servers missing here are reported as Unassigned.")
def business_hierarchy(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.Output[pd.DataFrame]:
    cfg = settings.get()
    ensure_demo_fleet(cfg)
    path = cfg.hierarchy_path
    conn = duckdb.connect()
    raw = (files.read_table(conn, path, files.HIERARCHY_COLUMNS, "CAPACITY_HIERARCHY") if path
           else pd.DataFrame(columns=list(files.HIERARCHY_COLUMNS)))
    if not path:
        context.log.warning("No CAPACITY_HIERARCHY given: every server will be reported as Unassigned")
    table, problems = hierarchy_table(raw)
    missing, extra, note = _coverage(conn, cfg, table)
    if missing and path:
        problems.append(f"{len(missing)} server(s) in the metrics are missing from the hierarchy and will be "
                        f"reported as {UNASSIGNED}: {_some(missing)}")
    if extra:
        problems.append(f"{len(extra)} server(s) in the hierarchy have no metrics: {_some(extra)}")
    if note:
        problems.append(note)
    for p in problems:
        context.log.warning(p)
    return dg.Output(table, metadata={
        "source": path or "(none)", "servers": len(table),
        "departments": int(table["department"].nunique()) if len(table) else 0,
        "servers_missing_from_hierarchy": len(missing), "servers_without_metrics": len(extra),
        "problems": "\n".join(problems) or "none",
    })


@dg.multi_asset(
    outs={
        "processed_data": dg.AssetOut(metadata=STORED_BY_BATCH, kinds={"duckdb"}, description=(
            "One value per server, resource and day (CAPACITY_DAILY_AGG of the raw samples), on a complete "
            "calendar with gaps interpolated (filled = true) and values clipped to 0–100.")),
        "skipped_series": dg.AssetOut(metadata=STORED_BY_BATCH, kinds={"duckdb"}, description=(
            "Series too short to backtest, with the reason; they are kept in processed_data but not forecast.")),
    },
    partitions_def=batches, group_name="ingest", check_specs=checks.PROCESSED_CHECKS,
)
def processed_data(context: dg.AssetExecutionContext, settings: SettingsResource):
    cfg = settings.get()
    batch = context.partition_key
    started = time.monotonic()
    ensure_demo_fleet(cfg)
    conn = duckdb.connect()
    sources = files.inspect_metrics(conn, cfg.metrics_glob)
    servers = servers_in_batch(files.distinct_servers(conn, sources), batch, cfg.batches)
    daily, stats = files.read_daily(conn, sources, servers, cfg.daily_agg)
    # what these results are made from, taken from the same files at the same moment (batch_ledger)
    batch_fingerprint = fingerprint.batch_fingerprints(conn, sources, cfg)[batch]
    full, fill = cleaning.complete_calendar(daily, cfg.backtest_months)
    processed = cleaning.processed_frame(full, batch)
    skipped = cleaning.short_series(processed, min_history_days(cfg.forecast_config), batch)
    no_id = sum(f.no_server_id for f in sources)
    for p in stats.examples:
        context.log.warning(f"{batch}: dropped rows, first {p}")
    for f in stats.fraction_files:
        context.log.warning(f"{f}: values look like fractions 0–1 (max <= 1): multiplied by 100")
    if stats.unknown_resource:
        context.log.warning(f"{batch}: skipped {stats.unknown_resource} rows with unknown resources "
                            f"{stats.unknown_resources} (expected {', '.join(files.RESOURCES)})")
    dropped = {"bad timestamp": stats.bad_timestamp, "missing value": stats.missing_value,
               "non-numeric value": stats.non_numeric_value}
    if any(dropped.values()) or stats.clipped or stats.duplicates:
        context.log.warning(f"{batch}: dropped rows: " + ", ".join(f"{n} {k}" for k, n in dropped.items())
                            + f"; {stats.clipped} samples clipped to 0–100; {stats.duplicates} duplicate samples "
                            f"averaged ({stats.duplicate_conflicts} with differing values)")
    if stats.utc_offset_rows and stats.naive_time_rows:
        context.log.warning(f"{batch}: {stats.utc_offset_rows} time stamps carry a UTC offset (converted to UTC) "
                            f"and {stats.naive_time_rows} do not (taken as UTC as they are)")
    if no_id:
        context.log.warning(f"{no_id} rows of the input have no server_id and belong to no batch: ignored")
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
        "resource_names_mapped": str(stats.resources_mapped or "none"),
        "duplicate_conflicts_averaged": int(stats.duplicate_conflicts),
        "utc_offset_rows": int(stats.utc_offset_rows), "naive_time_rows": int(stats.naive_time_rows),
        "max_samples_per_day": int(stats.max_samples_per_day),
        "series_skipped_short": len(skipped),
        "rows_without_server_id_ignored_all_batches": int(no_id),
        "fraction_scaled_files": ", ".join(stats.fraction_files) or "none",
        "daily_agg": cfg.daily_agg, "source": cfg.metrics_glob,
        "fingerprint": batch_fingerprint, "code_version": fingerprint.code_version(),
    })
    yield dg.Output(skipped, output_name="skipped_series", metadata={"series_skipped": len(skipped)})
    yield checks.values_in_range(processed)
    yield checks.one_row_per_day(processed)
    yield checks.batch_not_empty(processed, batch)
