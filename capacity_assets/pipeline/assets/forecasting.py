"""Stage 2: one ``<name>_results`` asset per fitted contender (CAPACITY_ENGINES), and the combination."""

import time

import dagster as dg
import pandas as pd

from capacity_assets.forecasting.engines.registry import COMBINERS, ENGINES, combine, run
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.partitions import Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.schema import MODEL_RESULTS, conform


def forecastable(processed: pd.DataFrame, skipped: pd.DataFrame) -> pd.DataFrame:
    """The series an engine should fit: everything in processed_data not listed in skipped_series."""
    history = processed[["server_id", "resource", "ds", "y"]]
    if skipped is not None and len(skipped):
        skip = pd.MultiIndex.from_frame(skipped[["server_id", "resource"]])
        history = history[~pd.MultiIndex.from_frame(history[["server_id", "resource"]]).isin(skip)]
    return history.assign(ds=pd.to_datetime(history["ds"])).sort_values(
        ["server_id", "resource", "ds"]
    )


def results_metadata(results: pd.DataFrame, seconds: float) -> dict:
    future = results[results["split"] == "future"]
    series = future[["batch", "server_id", "resource"]].drop_duplicates()
    models = (
        future.drop_duplicates(["batch", "server_id", "resource"])["model"].value_counts().to_dict()
    )
    return {
        "series": len(series),
        "rows": len(results),
        "seconds": round(seconds, 1),
        "models": str(models),
        "fallbacks": int(sum(n for m, n in models.items() if m.endswith(":fallback"))),
    }


def engine_asset(name: str, layout: Layout) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{name}_results",
        group_name="forecasting",
        **layout.per_batch(),
        description=f"{ENGINES[name].description} Backtest rows (fit on all but the last "
        "CAPACITY_BACKTEST_MONTHS), window rows (fits CAPACITY_WINDOWS months before the end, "
        "forecasting to it) and a refit's CAPACITY_HORIZON_DAYS future rows, with bounds.",
        ins={"processed_data": dg.AssetIn(), "skipped_series": dg.AssetIn()},
    )
    def _results(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        processed_data: pd.DataFrame,
        skipped_series: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        started = time.monotonic()

        def fit(batch, processed_data, skipped_series):
            out = run(
                name,
                forecastable(processed_data, skipped_series).reset_index(drop=True),
                cfg.forecast_config,
                log=context.log,
            )
            return conform(out.assign(batch=batch), MODEL_RESULTS)

        out = each_batch(
            context,
            name,
            {"processed_data": processed_data, "skipped_series": skipped_series},
            fit,
            MODEL_RESULTS,
        )
        meta = results_metadata(out, time.monotonic() - started)
        context.log.info(
            f"{name} forecast {meta['series']} series ({meta['fallbacks']} fallbacks) in {meta['seconds']}s"
        )
        return dg.Output(out, metadata=meta)

    return _results


def combiner_asset(name: str, layout: Layout, contenders: tuple[str, ...]) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{name}_results",
        group_name="forecasting",
        **layout.per_batch(),
        description=f"{ENGINES[name].description} Scored and crowned like any contender; fits nothing.",
        ins={"processed_data": dg.AssetIn(), **{f"{n}_results": dg.AssetIn() for n in contenders}},
    )
    def _results(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        processed_data: pd.DataFrame,
        **results,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()

        def combined(batch, processed_data, **results):
            by_model = {n: results[f"{n}_results"] for n in contenders}
            out = combine(
                name,
                by_model,
                processed_data[["server_id", "resource", "ds", "y"]],
                cfg.forecast_config,
            )
            return conform(out.assign(batch=batch), MODEL_RESULTS)

        out = each_batch(
            context, name, {"processed_data": processed_data, **results}, combined, MODEL_RESULTS
        )
        return dg.Output(out, metadata=results_metadata(out, 0.0))

    return _results


def forecasting_assets(layout: Layout, contenders: tuple[str, ...]) -> list[dg.AssetsDefinition]:
    """One asset per fitted contender of this deployment (CAPACITY_ENGINES), and the combiners."""
    return [engine_asset(n, layout) for n in contenders] + [
        combiner_asset(n, layout, contenders) for n in COMBINERS
    ]
