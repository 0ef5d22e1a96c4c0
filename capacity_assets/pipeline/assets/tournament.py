"""Stage 3: the tournament (champions) and the golden record (forecasts)."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from capacity_assets.forecasting import tournament
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.forecasting.engines.registry import CONTENDERS
from capacity_assets.pipeline import checks
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, batches

# the weekly schedule refreshes everything on Mondays; a week and a day later it is overdue
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))
RESULTS = {f"{name}_results": dg.AssetIn() for name in CONTENDERS}


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          ins={**RESULTS, "processed_data": dg.AssetIn()},
          check_specs=checks.CHAMPIONS_CHECKS,
          description="Per series: every contender's backtest MAPE, WAPE, MAE and interval coverage; the "
                      "champion is the lower MAPE (ties to Prophet), with a trust level.")
def champions(context: dg.AssetExecutionContext, settings: SettingsResource, processed_data: pd.DataFrame, **results):
    cfg = settings.get()
    by_model = {name: results[f"{name}_results"] for name in CONTENDERS}
    table = tournament.champions(by_model, processed_data, trust_medium=cfg.mape_warn)
    wins = tournament.wins(table)
    median = tournament.median_champion_mape(table)
    context.log.info(f"{context.partition_key}: {len(table)} series; wins {wins}; median champion MAPE {median}")
    yield dg.Output(table, metadata={
        "series": len(table), **{f"wins_{k}": v for k, v in wins.items()},
        **{f"win_share_{k}": round(v / max(len(table), 1), 3) for k, v in wins.items()},
        "median_champion_mape": median,
        "trust": str(table["trust"].value_counts().to_dict()),
        "preview": dg.MetadataValue.md(tournament.markdown_preview(
            table.sort_values("champion_mape", ascending=False)[
                ["server_id", "resource", "champion", "champion_mape", "trust"]])),
    })
    yield checks.champion_mape(table, cfg.mape_warn, cfg.mape_error_share)


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          freshness_policy=FRESHNESS,
          ins={**RESULTS, "champions": dg.AssetIn(), "processed_data": dg.AssetIn(), "skipped_series": dg.AssetIn()},
          check_specs=checks.FORECASTS_CHECKS,
          description="The golden record: each series' champion 180-day forecast with bounds, its MAPE, "
                      "trust level, and the run that produced it.")
def forecasts(context: dg.AssetExecutionContext, settings: SettingsResource, champions: pd.DataFrame,
              processed_data: pd.DataFrame, skipped_series: pd.DataFrame, **results):
    cfg = settings.get()
    by_model = {name: results[f"{name}_results"] for name in CONTENDERS}
    table = tournament.golden_record(by_model, champions, pd.Timestamp.now(tz="UTC").tz_localize(None), context.run_id)
    yield dg.Output(table, metadata={
        "series": int(table[["server_id", "resource"]].drop_duplicates().shape[0]), "rows": len(table),
        "models": str(table.drop_duplicates(["server_id", "resource"])["model"].value_counts().to_dict()),
        "run_id": context.run_id,
    })
    yield checks.forecast_horizon(table, cfg.horizon_days)
    yield checks.forecast_bounds_ordered(table)
    yield checks.every_series_accounted(table, processed_data, skipped_series)
