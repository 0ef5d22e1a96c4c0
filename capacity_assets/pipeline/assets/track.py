"""Stage 6: the track record. Every run's golden record is kept as a vintage and scored later against
what really happened; every risk call too, and each exception's lifecycle (new, ongoing, resolved).

forecast_history and risk_history are append tables: publishing a batch replaces only this run's
vintage and keeps the newest CAPACITY_KEEP_VINTAGES (``pipeline.io_manager``). The scoring assets
read the vintages already published through ``store.history``.
"""

import dagster as dg
import pandas as pd

from capacity_assets.pipeline import checks
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.io_manager import APPEND_BY, KEEP
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.risk.levels import levels
from capacity_assets.schema import (
    FORECAST_ACCURACY,
    FORECAST_HISTORY,
    RISK_CALL_OUTCOMES,
    RISK_HISTORY,
    RISK_RESOLVED,
    empty,
)
from capacity_assets.store.history import read_batch
from capacity_assets.track import accuracy, lifecycle, risk_calls, vintages
from capacity_assets.track.kept import Kept, current_vintage, newest


def track_assets(layout: Layout, keep_vintages: int) -> list[dg.AssetsDefinition]:
    # an append table keeps this many vintages per batch (pipeline.io_manager)
    appended = layout.per_batch({**STORED_BY_BATCH, APPEND_BY: "vintage", KEEP: keep_vintages})

    @dg.asset(
        group_name="track",
        **appended,
        description="Every run's golden record kept as a vintage (its first forecast day): forecasts rounded to "
        "0.01 points and the threshold each series was judged against. Re-running the same data "
        "replaces its vintage; the newest CAPACITY_KEEP_VINTAGES are kept per batch.",
    )
    def forecast_history(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()

        def vintage(batch, forecasts, business_hierarchy):
            return vintages.as_vintage(forecasts, levels(cfg, forecasts, business_hierarchy))

        out = each_batch(
            context,
            "forecast_history",
            {"forecasts": forecasts, "business_hierarchy": business_hierarchy},
            vintage,
            FORECAST_HISTORY,
        )
        return dg.Output(
            out,
            metadata={
                "vintages": ", ".join(sorted({f"{v:%Y-%m-%d}" for v in out["vintage"]})) or "none",
                "rows": len(out),
            },
        )

    @dg.asset(
        group_name="track",
        **appended,
        description="Every run's risk calls kept as a vintage: the series flagged, their severity, threshold and "
        "owners at the time, so later runs can tell new exceptions from ongoing ones and score them.",
    )
    def risk_history(
        context: dg.AssetExecutionContext, risk_exceptions: pd.DataFrame, forecasts: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        out = each_batch(
            context,
            "risk_history",
            {"risk_exceptions": risk_exceptions, "forecasts": forecasts},
            lambda batch, risk_exceptions, forecasts: risk_calls.as_risk_vintage(
                risk_exceptions, forecasts
            ),
            RISK_HISTORY,
        )
        return dg.Output(out, metadata={"rows": len(out)})

    @dg.asset(
        group_name="track",
        **layout.per_batch(),
        check_specs=[checks.DRIFT_SPEC],
        ins={"processed_data": dg.AssetIn(), "champions": dg.AssetIn(), "forecasts": dg.AssetIn()},
        deps=["forecast_history"],
        description="Each kept vintage against the actuals that arrived since, per series and horizon bucket "
        "(1-7, 8-30, 31-90, 91-180, all): days scored, MAPE, WAPE, bias, band coverage; measured "
        "days only.",
    )
    def forecast_accuracy(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        processed_data: pd.DataFrame,
        champions: pd.DataFrame,
        forecasts: pd.DataFrame,
    ):
        cfg = settings.get()

        def score(
            batch, processed_data, champions, forecasts
        ):  # every forecast day: one batch at a time
            history = newest(
                cfg,
                read_batch(cfg.database, "forecast_history", batch, FORECAST_HISTORY),
                current_vintage(forecasts),
            )
            return accuracy.score_vintages(history, processed_data)

        out = each_batch(
            context,
            "forecast_accuracy",
            {"processed_data": processed_data, "champions": champions, "forecasts": forecasts},
            score,
            FORECAST_ACCURACY,
        )
        passed, details = accuracy.batch_drift(
            out, accuracy.backtest_mape_by_batch(champions), cfg.drift_factor
        )
        drifted = details.get("drifted", [])
        yield dg.Output(
            out,
            metadata={
                "rows": len(out),
                "vintages_scored": int(out[["batch", "vintage"]].drop_duplicates().shape[0]),
            },
        )
        yield dg.AssetCheckResult(
            check_name="batch_drift",
            passed=bool(passed),
            severity=dg.AssetCheckSeverity.WARN,
            description=None
            if passed
            else f"{len(drifted)} batch(es) forecast worse than their backtest promised by "
            f"more than {cfg.drift_factor:g}x: {', '.join(map(str, drifted))}",
            metadata={
                "drifted": ", ".join(map(str, drifted)) or "none",
                "not_scored_yet": ", ".join(map(str, details.get("not_scored_yet", []))) or "none",
            },
        )

    @dg.asset(
        name="risk_calls",
        group_name="track",
        **layout.per_batch(),
        ins={
            "processed_data": dg.AssetIn(),
            "business_hierarchy": dg.AssetIn(),
            "forecasts": dg.AssetIn(),
        },
        deps=["forecast_history", "risk_history"],
        description="Did the risk calls come true? Per kept vintage before this run's and series: flagged or not, "
        "whether a measured "
        "actual reached the threshold within the risk window, 'final' once the window has passed "
        "('so_far' before). Precision and recall follow by vintage and department.",
    )
    def risk_call_outcomes(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        processed_data: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
        forecasts: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        record = Kept(cfg, context.partition_keys)

        def outcomes(batch, processed_data, business_hierarchy, forecasts):
            # the kept vintages before this run's: its own has nothing to score yet, and is published only
            # after this step, so reading it would make a re-run of the same data differ from the first run
            now = current_vintage(forecasts)
            risk, series = record.risk_history(batch, now), record.series_vintages(batch, now)
            if now is not None:
                risk, series = (
                    f[f["vintage"] < now].reset_index(drop=True) for f in (risk, series)
                )
            return risk_calls.risk_call_outcomes(
                risk, series, processed_data, cfg.risk_days, business_hierarchy
            )

        out = each_batch(
            context,
            "risk_calls",
            {
                "processed_data": processed_data,
                "business_hierarchy": business_hierarchy,
                "forecasts": forecasts,
            },
            outcomes,
            RISK_CALL_OUTCOMES,
        )
        scores = risk_calls.risk_call_scores(out) if len(out) else pd.DataFrame()
        return dg.Output(
            out,
            metadata={
                "rows": len(out),
                "final_vintages": int(scores["final"].sum()) if len(scores) else 0,
            },
        )

    @dg.asset(
        group_name="track",
        **layout.per_batch(),
        ins={
            "risk_exceptions": dg.AssetIn(),
            "forecasts": dg.AssetIn(),
            "business_hierarchy": dg.AssetIn(),
        },
        deps=["forecast_history", "risk_history"],
        description="Series flagged in the previous vintage and not in this one, with the reason when known: the "
        "forecast fell, the server left the fleet, or the threshold changed.",
    )
    def risk_resolved(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        risk_exceptions: pd.DataFrame,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        record = Kept(cfg, context.partition_keys)
        run_now = current_vintage(forecasts)

        def gone(batch, risk_exceptions, forecasts, business_hierarchy):
            # a batch whose servers all left has no vintage of its own: it is judged at the run's
            now = current_vintage(forecasts) or run_now
            if now is None:
                return empty(RISK_RESOLVED)
            register = vintages.vintages_of(record.series_vintages(batch, now))
            return lifecycle.resolved(
                record.risk_history(batch, now),
                risk_exceptions,
                forecasts,
                now,
                register,
                levels(cfg, forecasts, business_hierarchy),
                cfg.risk_days,
                batches=[batch],
            )

        out = each_batch(
            context,
            "risk_resolved",
            {
                "risk_exceptions": risk_exceptions,
                "forecasts": forecasts,
                "business_hierarchy": business_hierarchy,
            },
            gone,
            RISK_RESOLVED,
        )
        return dg.Output(out, metadata={"resolved": len(out)})

    return [forecast_history, risk_history, forecast_accuracy, risk_call_outcomes, risk_resolved]
