"""Stage 1: business_hierarchy, and processed_data / skipped_series per server batch."""

import time

import dagster as dg
import duckdb
import pandas as pd

from capacity_assets.forecasting.engines.base import min_history_days
from capacity_assets.inputs import cleaning, files, fingerprint, inspected
from capacity_assets.inputs.batching import batch_of
from capacity_assets.inputs.hierarchy import UNASSIGNED, hierarchy_table, read_hierarchy
from capacity_assets.pipeline import checks
from capacity_assets.pipeline.batches import each_batch, failures, mark
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, Layout
from capacity_assets.pipeline.resources import PrometheusResource, SettingsResource
from capacity_assets.risk.thresholds import fleet_problems
from capacity_assets.schema import PROCESSED_DATA

SHOW = 5  # server ids named in a warning


def _some(ids: list[str]) -> str:
    return ", ".join(map(repr, ids[:SHOW])) + (
        f" and {len(ids) - SHOW} more" if len(ids) > SHOW else ""
    )


def _coverage(conn, metrics: str, table: pd.DataFrame) -> tuple[list[str], list[str], str]:
    """Metric servers the hierarchy lacks and hierarchy servers without metrics, so an owner gap is
    seen when the hierarchy loads, not only as 'Unassigned' rows in the risk list."""
    try:
        metric_servers = files.distinct_servers(conn, files.inspect_metrics(conn, metrics))
    except files.InputError as e:
        return [], [], f"not compared with the metrics ({e})"
    known = set(table["server_id"])
    missing = [s for s in metric_servers if s not in known]
    extra = sorted(known - set(metric_servers))
    return missing, extra, ""


@dg.asset(
    group_name="ingest",
    kinds={"duckdb"},
    description="Who owns each server: department, app manager and any extra columns of the "
    "hierarchy file (CAPACITY_HIERARCHY). Servers missing here are reported as Unassigned.",
)
def business_hierarchy(
    context: dg.AssetExecutionContext, settings: SettingsResource, prometheus: PrometheusResource
) -> dg.Output[pd.DataFrame]:
    cfg = settings.get()
    metrics = prometheus.metrics_files(cfg, log=context.log.info)
    path = cfg.hierarchy_path
    conn = duckdb.connect()
    if path:
        table, problems = read_hierarchy(conn, path)
    else:
        context.log.warning(
            "No CAPACITY_HIERARCHY given: every server will be reported as Unassigned"
        )
        table, problems = hierarchy_table(pd.DataFrame(columns=list(files.HIERARCHY_COLUMNS)))
    missing, extra, note = _coverage(conn, metrics, table)
    if missing and path:
        problems.append(
            f"{len(missing)} server(s) in the metrics are missing from the hierarchy and will be "
            f"reported as {UNASSIGNED}: {_some(missing)}"
        )
    if extra:
        problems.append(f"{len(extra)} server(s) in the hierarchy have no metrics: {_some(extra)}")
    if note:
        problems.append(note)
    # bad per-server levels and sizes, targets above thresholds: once for the fleet, not per batch
    problems += fleet_problems(
        [*table["server_id"], *missing],
        table,
        cfg.threshold,
        cfg.threshold_per_resource,
        cfg.target,
        cfg.target_per_resource,
    )
    for p in problems:
        context.log.warning(p)
    return dg.Output(
        table,
        metadata={
            "source": path or "(none)",
            "servers": len(table),
            "departments": int(table["department"].nunique()) if len(table) else 0,
            "servers_missing_from_hierarchy": len(missing),
            "servers_without_metrics": len(extra),
            "problems": "\n".join(problems) or "none",
        },
    )


class IngestConfig(dg.Config):
    """Run config of processed_data: what `capacity run` already inspected (``inputs.inspected``,
    as JSON); empty in a run launched from the UI, which reads the input itself."""

    inspected: str = ""


def processed_data_asset(layout: Layout) -> dg.AssetsDefinition:
    @dg.multi_asset(
        outs={
            "processed_data": dg.AssetOut(
                metadata=STORED_BY_BATCH,
                kinds={"duckdb"},
                description=(
                    "One value per server, resource and day (CAPACITY_DAILY_AGG of the raw samples), on a complete "
                    "calendar with gaps interpolated (filled = true) and values clipped to 0–100."
                ),
            ),
            "skipped_series": dg.AssetOut(
                metadata=STORED_BY_BATCH,
                kinds={"duckdb"},
                description=(
                    "Series too short to backtest, with the reason; they are kept in processed_data but not forecast."
                ),
            ),
        },
        partitions_def=layout.batches,
        backfill_policy=layout.backfill,
        group_name="ingest",
        check_specs=checks.PROCESSED_CHECKS,
    )
    def processed_data(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        prometheus: PrometheusResource,
        config: IngestConfig,
    ):
        cfg = settings.get()
        keys = context.partition_keys
        started = time.monotonic()
        conn = duckdb.connect()
        if config.inspected:  # the launcher's inspection: this run reads only its batches' rows
            seen = inspected.loads(config.inspected)
            if not set(keys) <= seen.batches:
                raise dg.Failure(
                    f"the run was handed the inspection of {sorted(seen.batches)}, not of {keys}"
                )
            sources, prints, server_batch = seen.sources, seen.fingerprints, seen.server_batch
        else:  # a run of its own (the UI): the input is read once for every batch of the run
            metrics = prometheus.metrics_files(cfg, log=context.log.info)
            sources = files.inspect_metrics(conn, metrics)
            digests = fingerprint.server_digests(conn, sources)
            prints = fingerprint.batch_fingerprints(conn, sources, cfg, digests=digests)
            server_batch = {s: batch_of(s, cfg.batches) for s in digests}
        servers = sorted(s for s, b in server_batch.items() if b in keys)
        daily, stats = files.read_daily(conn, sources, servers, cfg.daily_agg)
        daily = daily.assign(batch=daily["server_id"].map(server_batch))
        read_s = time.monotonic() - started
        fills: dict[str, dict] = {}

        in_input = pd.Series(server_batch).value_counts() if server_batch else pd.Series(dtype=int)

        def clean(batch: str, daily: pd.DataFrame) -> pd.DataFrame:
            if daily.empty and in_input.get(batch, 0):
                # its servers are in the input but none of their rows is usable: publishing would replace
                # the batch's last results with nothing, so it fails and keeps them
                raise files.InputError(
                    f"none of the input rows of its {in_input[batch]} server(s) can be used "
                    f"({'; '.join(stats.examples) or 'see the dropped-rows warnings'}); "
                    "its previous results are kept"
                )
            full, fills[batch] = cleaning.complete_calendar(
                daily.drop(columns="batch"), cfg.backtest_months
            )
            return cleaning.processed_frame(full, batch)

        processed = each_batch(context, "processed_data", {"daily": daily}, clean, PROCESSED_DATA)
        short = cleaning.short_series(processed, min_history_days(cfg.forecast_config))
        # judged against the run's newest day, not the published batches': re-running an older export
        # must not find the whole fleet silent
        stale = cleaning.stale_series(processed, daily["ds"].max() if len(daily) else None)
        stale = stale.merge(short[["server_id", "resource"]], how="left", indicator=True)
        stale = stale[stale.pop("_merge") == "left_only"]
        skipped = mark(
            pd.concat([short, stale], ignore_index=True).sort_values(
                ["batch", "server_id", "resource"], ignore_index=True
            ),
            failures(processed),
        )
        _warn(context, stats, sources, short, stale)
        gaps = [f for f in fills.values() if f["long_gaps"]]
        if gaps:
            context.log.warning(
                f"{sum(f['long_gaps'] for f in gaps)} gap(s) longer than {cleaning.SHORT_GAP_DAYS} days "
                f"interpolated (an outage or a missing export: the models see a straight line there), "
                f"e.g. {gaps[0]['long_gap_example']}"
            )
        context.log.info(
            f"{len(keys)} batch(es): {len(servers)} servers, {stats.rows_in:,} rows read in {read_s:.1f}s -> "
            f"{len(processed):,} daily values ({sum(f['days_filled'] for f in fills.values()):,} filled) "
            f"in {time.monotonic() - started:.1f}s"
        )
        yield dg.Output(
            processed,
            output_name="processed_data",
            metadata={
                "batches": len(keys),
                "servers": len(servers),
                "series": sum(f["series"] for f in fills.values()),
                "rows_in": stats.rows_in,
                "rows_out": len(processed),
                "read_seconds": round(read_s, 2),
                "duplicates_dropped": int(stats.duplicates),
                "values_clipped": int(stats.clipped),
                "days_filled": sum(f["days_filled"] for f in fills.values()),
                "long_gaps_filled": sum(f["long_gaps"] for f in fills.values()),
                "bad_timestamps_dropped": int(stats.bad_timestamp),
                "missing_values_dropped": int(stats.missing_value),
                "non_numeric_values_dropped": int(stats.non_numeric_value),
                "unknown_resource_rows_dropped": int(stats.unknown_resource),
                "unknown_resources": str(stats.unknown_resources or "none"),
                "resource_names_mapped": str(stats.resources_mapped or "none"),
                "duplicate_conflicts_averaged": int(stats.duplicate_conflicts),
                "utc_offset_rows": int(stats.utc_offset_rows),
                "naive_time_rows": int(stats.naive_time_rows),
                "max_samples_per_day": int(stats.max_samples_per_day),
                "series_skipped_short": len(skipped),
                "rows_without_server_id_ignored_all_batches": int(
                    sum(f.no_server_id for f in sources)
                ),
                "fraction_scaled_files": ", ".join(stats.fraction_files) or "none",
                "daily_agg": cfg.daily_agg,
                "source": cfg.metrics_glob if not cfg.uses_prometheus else cfg.prom_cache,
                # what these results are made from, read from the same files at the same moment (batch_ledger)
                "fingerprints": dg.MetadataValue.json({b: prints[b] for b in keys}),
                "code_version": fingerprint.code_version(),
            },
        )
        yield dg.Output(
            skipped, output_name="skipped_series", metadata={"series_skipped": len(skipped)}
        )
        yield checks.values_in_range(processed)
        yield checks.one_row_per_day(processed)
        yield checks.batch_not_empty(processed, keys)

    return processed_data


def _warn(context, stats, sources, short: pd.DataFrame, stale: pd.DataFrame) -> None:
    """What a data owner should hear about: rows dropped or repaired, series too short."""
    for line in stats.examples:
        context.log.warning(line)
    for f in stats.fraction_files:
        context.log.warning(f"{f}: values look like fractions 0–1 (max <= 1): multiplied by 100")
    if stats.unknown_resource:
        context.log.warning(
            f"skipped {stats.unknown_resource} rows with unknown resources "
            f"{stats.unknown_resources} (expected {', '.join(files.RESOURCES)})"
        )
    dropped = {
        "bad timestamp": stats.bad_timestamp,
        "missing value": stats.missing_value,
        "non-numeric value": stats.non_numeric_value,
    }
    if any(dropped.values()) or stats.clipped or stats.duplicates:
        context.log.warning(
            "dropped rows: "
            + ", ".join(f"{n} {k}" for k, n in dropped.items())
            + f"; {stats.clipped} samples clipped to 0–100; {stats.duplicates} duplicate samples "
            f"averaged ({stats.duplicate_conflicts} with differing values)"
        )
    if stats.utc_offset_rows and stats.naive_time_rows:
        context.log.warning(
            f"{stats.utc_offset_rows} time stamps carry a UTC offset (converted to UTC) "
            f"and {stats.naive_time_rows} do not (taken as UTC as they are)"
        )
    no_id = sum(f.no_server_id for f in sources)
    if no_id:
        context.log.warning(
            f"{no_id} rows of the input have no server_id and belong to no batch: ignored"
        )
    for what, some in (
        ("too short to forecast", short),
        (
            f"without a measured day in the data's last {cleaning.STALE_DAYS} days, not forecast",
            stale,
        ),
    ):
        if len(some):
            context.log.warning(
                f"{len(some)} series {what}, e.g. {some['batch'].iloc[0]} "
                f"{some['server_id'].iloc[0]}/{some['resource'].iloc[0]}: {some['reason'].iloc[0]}"
            )
