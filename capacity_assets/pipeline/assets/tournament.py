"""Stage 3: the tournament (champions) and the golden record (forecasts)."""

import dagster as dg
import pandas as pd

from capacity_assets.forecasting import tournament
from capacity_assets.forecasting.engines.registry import COMBINERS
from capacity_assets.pipeline import checks
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.partitions import Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.risk.levels import levels
from capacity_assets.schema import FORECASTS, champions_columns


def tournament_assets(layout: Layout, contenders: tuple[str, ...]) -> list[dg.AssetsDefinition]:
    tournament_names = (*contenders, *COMBINERS)
    results_in = {f"{name}_results": dg.AssetIn() for name in tournament_names}

    @dg.asset(
        group_name="decision",
        **layout.per_batch(),
        ins={**results_in, "processed_data": dg.AssetIn(), "business_hierarchy": dg.AssetIn()},
        check_specs=checks.CHAMPIONS_CHECKS,
        description="Per series: every contender's backtest MAPE, WAPE, MAE and interval coverage; the "
        "champion is the lowest MAPE pooled over the backtest and the later origins' windows (ties "
        "in registry order; a fitted contender must beat the combination by 10 %), with a trust level that weighs the backtest error against the "
        "headroom to the threshold.",
    )
    def champions(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        processed_data: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
        **results,
    ):
        cfg = settings.get()

        def crown(batch, processed_data, business_hierarchy, **results):
            by_model = {name: results[f"{name}_results"] for name in tournament_names}
            return tournament.champions(
                by_model,
                processed_data,
                trust_medium=cfg.mape_warn,
                threshold=levels(cfg, processed_data, business_hierarchy),
                risk_days=cfg.risk_days,
            )

        table = each_batch(
            context,
            "champions",
            {"processed_data": processed_data, "business_hierarchy": business_hierarchy, **results},
            crown,
            champions_columns(tournament_names),
        )
        wins = tournament.wins(table)
        median = tournament.median_champion_mape(table)
        context.log.info(f"{len(table)} series; wins {wins}; median champion MAPE {median}")
        yield dg.Output(
            table,
            metadata={
                "series": len(table),
                **{f"wins_{k}": v for k, v in wins.items()},
                **{f"win_share_{k}": round(v / max(len(table), 1), 3) for k, v in wins.items()},
                "median_champion_mape": median,
                "trust": str(table["trust"].value_counts().to_dict()),
                "preview": dg.MetadataValue.md(
                    tournament.markdown_preview(
                        table.sort_values("champion_mape", ascending=False)[
                            ["server_id", "resource", "champion", "champion_mape", "trust"]
                        ]
                    )
                ),
            },
        )
        yield checks.champion_mape(table, cfg.mape_warn, cfg.mape_error_share)

    @dg.asset(
        group_name="decision",
        **layout.per_batch(),
        freshness_policy=checks.FRESHNESS,
        ins={
            **results_in,
            "champions": dg.AssetIn(),
            "processed_data": dg.AssetIn(),
            "skipped_series": dg.AssetIn(),
        },
        check_specs=checks.FORECASTS_CHECKS,
        description="The golden record: each series' champion 180-day forecast with bounds (the upper bound "
        "capped at the contenders' median upper bound), unclipped demand, its MAPE, trust level, "
        "and the run that produced it.",
    )
    def forecasts(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        champions: pd.DataFrame,
        processed_data: pd.DataFrame,
        skipped_series: pd.DataFrame,
        **results,
    ):
        cfg = settings.get()
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)

        def golden(batch, champions, **results):
            by_model = {name: results[f"{name}_results"] for name in tournament_names}
            return tournament.golden_record(
                by_model, champions, now, context.run.run_id, upper="consensus"
            )

        table = each_batch(
            context, "forecasts", {"champions": champions, **results}, golden, FORECASTS
        )
        yield dg.Output(
            table,
            metadata={
                "series": int(table[["batch", "server_id", "resource"]].drop_duplicates().shape[0]),
                "rows": len(table),
                "models": str(
                    table.drop_duplicates(["batch", "server_id", "resource"])["model"]
                    .value_counts()
                    .to_dict()
                ),
                "run_id": context.run.run_id,
            },
        )
        yield checks.forecast_horizon(table, cfg.horizon_days)
        yield checks.forecast_bounds_ordered(table)
        yield checks.every_series_accounted(table, processed_data, skipped_series)

    return [champions, forecasts]
