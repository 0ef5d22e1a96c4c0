"""Stage 6: the track record. Every run's golden record is kept as a vintage and scored later against
what really happened; every risk call too, and each exception's lifecycle (new, ongoing, resolved).

forecast_history and risk_history are append tables: publishing a batch replaces only this run's
vintage and keeps the newest CAPACITY_KEEP_VINTAGES (``pipeline.io_manager``). The scoring assets
read the vintages already published through ``store.history``.
"""

from functools import cached_property

import dagster as dg
import pandas as pd

from capacity_assets.config import CapacitySettings
from capacity_assets.pipeline.assets.tournament import levels
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.io_manager import APPEND_BY, KEEP
from capacity_assets.pipeline.partitions import BACKFILL, PER_BATCH, STORED_BY_BATCH, batches
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.schema import (
    FORECAST_ACCURACY,
    FORECAST_HISTORY,
    RISK_CALL_OUTCOMES,
    RISK_HISTORY,
    RISK_RESOLVED,
    empty,
)
from capacity_assets.store.history import read_batch, read_batches, read_series_vintages
from capacity_assets.track import accuracy, lifecycle, risk_calls, vintages


def newest(cfg, frame: pd.DataFrame, current) -> pd.DataFrame:
    """A batch's published rows of an append table as they will be once this run publishes: only
    the newest CAPACITY_KEEP_VINTAGES vintages, counting this run's (``current``), so nothing this
    run drops is still scored or dated from."""
    vintage = pd.to_datetime(frame["vintage"])
    keep = sorted(
        {*pd.DatetimeIndex(vintage.unique()), *([current] if current is not None else [])},
        reverse=True,
    )[: cfg.keep_vintages]
    return frame[vintage.isin(keep)].reset_index(drop=True)


class Kept:
    """What the run's batches have published in the track record, read once per asset for all of
    them: risk_history, and forecast_history as one row per vintage and series (``store.history``)."""

    def __init__(self, cfg, batches: list[str]):
        self.cfg, self.batches = cfg, list(batches)

    @cached_property
    def _risk(self) -> dict[str, pd.DataFrame]:
        return read_batches(self.cfg.database, "risk_history", self.batches, RISK_HISTORY)

    @cached_property
    def _series(self) -> dict[str, pd.DataFrame]:
        return read_series_vintages(self.cfg.database, self.batches)

    def risk_history(self, batch: str, current) -> pd.DataFrame:
        return newest(self.cfg, self._risk[batch], current)

    def series_vintages(self, batch: str, current) -> pd.DataFrame:
        """forecast_history of the batch, one row per vintage and series (its first day, threshold)."""
        return newest(self.cfg, self._series[batch], current)


def current_vintage(forecasts: pd.DataFrame):
    key = vintages.vintage_of(forecasts)
    return None if key.empty else pd.Timestamp(key["vintage"].iloc[0])


# an append table keeps this many vintages per batch; read when the definitions load, like the batches
APPEND = {**STORED_BY_BATCH, APPEND_BY: "vintage", KEEP: CapacitySettings.from_env().keep_vintages}
APPENDED = {
    "partitions_def": batches,
    "backfill_policy": BACKFILL,
    "metadata": APPEND,
    "kinds": {"duckdb"},
}
DRIFT_SPEC = dg.AssetCheckSpec(
    "batch_drift",
    asset="forecast_accuracy",
    description=(
        "WARN when a batch's realised MAPE over its last 4 scored vintages is worse than its backtest MAPE by more "
        "than CAPACITY_DRIFT_FACTOR: the models are drifting."
    ),
)


@dg.asset(
    group_name="track",
    **APPENDED,
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
    **APPENDED,
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
    **PER_BATCH,
    check_specs=[DRIFT_SPEC],
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
    **PER_BATCH,
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
            risk, series = (f[f["vintage"] < now].reset_index(drop=True) for f in (risk, series))
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
    **PER_BATCH,
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


def exception_status(
    cfg, batch: str, risk: pd.DataFrame, forecasts: pd.DataFrame, record: Kept | None = None
) -> pd.DataFrame:
    """risk_exceptions of a batch with its lifecycle: new or ongoing, flagged since when (the same
    column order whether or not the batch has exceptions)."""
    record = record or Kept(cfg, [batch])
    now = current_vintage(forecasts)
    return lifecycle.with_status(
        risk,
        record.risk_history(batch, now),
        now if now is not None else pd.Timestamp.now().normalize(),
        vintages.vintages_of(record.series_vintages(batch, now)),
    )
