"""The code location: assets, checks, jobs, schedules and resources, all chosen from CapacitySettings."""

from __future__ import annotations

import logging

import dagster as dg

from capacity_assets.config import CapacitySettings
from capacity_assets.pipeline.assets.forecasting import engine_assets
from capacity_assets.pipeline.assets.ingest import business_hierarchy, processed_data
from capacity_assets.pipeline.assets.ledger import batch_ledger, every_batch_fresh
from capacity_assets.pipeline.assets.risk import capacity_plan, risk_exceptions
from capacity_assets.pipeline.assets.tournament import champions, forecasts
from capacity_assets.pipeline.assets.track import (
    forecast_accuracy,
    forecast_history,
    risk_call_outcomes,
    risk_history,
    risk_resolved,
)
from capacity_assets.pipeline.jobs import (
    daily_freshness,
    forecast_job,
    freshness_job,
    hierarchy_job,
    weekly_forecast,
    weekly_hierarchy,
)
from capacity_assets.pipeline.loggers import console
from capacity_assets.pipeline.notify import capacity_notify, digests_after_risk
from capacity_assets.pipeline.resources import build_executor, build_resources

logging.getLogger("cmdstanpy").disabled = True

settings = CapacitySettings.from_env()

defs = dg.Definitions(
    assets=[
        business_hierarchy,
        processed_data,
        *engine_assets,
        champions,
        forecasts,
        risk_exceptions,
        capacity_plan,
        forecast_history,
        risk_history,
        forecast_accuracy,
        risk_call_outcomes,
        risk_resolved,
        batch_ledger,
    ],
    asset_checks=[every_batch_fresh],
    jobs=[forecast_job, hierarchy_job, freshness_job, capacity_notify],
    sensors=[digests_after_risk],
    schedules=[weekly_forecast, weekly_hierarchy, daily_freshness],
    resources=build_resources(settings),
    executor=build_executor(settings),
    loggers={"console": console},
)


def capacity_forecast_job():
    """The batch job, reconstructable in another process (for the multiprocess and dask executors)."""
    return defs.resolve_job_def("capacity_forecast")
