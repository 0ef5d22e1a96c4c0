"""Stage 2: one ``<name>_results`` asset per contender in the engine registry."""

import time

import dagster as dg
import pandas as pd

from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.forecasting.engines.registry import CONTENDERS, ENGINES, run
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, batches
from capacity_assets.schema import ENGINE_RESULTS, MODEL_RESULTS, conform, empty



def forecastable(processed: pd.DataFrame, skipped: pd.DataFrame) -> pd.DataFrame:
    """The series an engine should fit: everything in processed_data not listed in skipped_series."""
    if processed.empty:
        return processed
    history = processed[["server_id", "resource", "ds", "y"]]
    if skipped is None or skipped.empty:
        return history
    skip = set(zip(skipped["server_id"], skipped["resource"]))
    keep = [(s, r) not in skip for s, r in zip(history["server_id"], history["resource"])]
    return history[keep]


def results_metadata(results: pd.DataFrame, seconds: float) -> dict:
    future = results[results["split"] == "future"]
    series = future[["server_id", "resource"]].drop_duplicates()
    models = future.drop_duplicates(["server_id", "resource"])["model"].value_counts().to_dict()
    return {"series": len(series), "rows": len(results), "seconds": round(seconds, 1),
            "models": str(models), "fallbacks": int(sum(n for m, n in models.items() if m.endswith(":fallback")))}


def engine_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=f"{name}_results", partitions_def=batches, group_name="forecasting",
              metadata=STORED_BY_BATCH, kinds={"duckdb"},
              description=f"{ENGINES[name].description} Backtest rows (fit on all but the last "
                          "CAPACITY_BACKTEST_MONTHS) and a refit's CAPACITY_HORIZON_DAYS future rows, with bounds.",
              ins={"processed_data": dg.AssetIn(), "skipped_series": dg.AssetIn()})
    def _results(context: dg.AssetExecutionContext, settings: SettingsResource,
                 processed_data: pd.DataFrame, skipped_series: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        started = time.monotonic()
        history = forecastable(processed_data, skipped_series)
        if history.empty:
            out = empty(ENGINE_RESULTS)
        else:
            history = history.assign(ds=pd.to_datetime(history["ds"])).sort_values(["server_id", "resource", "ds"])
            out = run(name, history.reset_index(drop=True), cfg.forecast_config, log=context.log)
        out.insert(0, "batch", context.partition_key)
        out = conform(out, MODEL_RESULTS)
        meta = results_metadata(out, time.monotonic() - started)
        context.log.info(f"{context.partition_key}: {name} forecast {meta['series']} series "
                         f"({meta['fallbacks']} fallbacks) in {meta['seconds']}s")
        return dg.Output(out, metadata=meta)

    return _results


engine_assets = [engine_asset(name) for name in CONTENDERS]
