"""The code location: assets, checks, jobs, schedules and resources, all built from one set of
settings (``build_defs``), never from the environment at import time."""

from __future__ import annotations

import logging
import warnings

import dagster as dg

from capacity_assets import config
from capacity_assets.config import CapacitySettings
from capacity_assets.notify.smtp import SmtpSettings
from capacity_assets.pipeline import checks
from capacity_assets.pipeline.alerts import run_failure_alert
from capacity_assets.pipeline.assets.export import prometheus_textfile
from capacity_assets.pipeline.assets.forecasting import forecasting_assets
from capacity_assets.pipeline.assets.ingest import business_hierarchy, processed_data_asset
from capacity_assets.pipeline.assets.ledger import ledger_assets
from capacity_assets.pipeline.assets.pools import pool_assets
from capacity_assets.pipeline.assets.risk import risk_assets
from capacity_assets.pipeline.assets.tournament import tournament_assets
from capacity_assets.pipeline.assets.track import track_assets
from capacity_assets.pipeline.assets.whatif import whatif_assets
from capacity_assets.pipeline.catalog import catalog
from capacity_assets.pipeline.executors import build_executor
from capacity_assets.pipeline.jobs import build_jobs
from capacity_assets.pipeline.loggers import console
from capacity_assets.pipeline.notify import capacity_notify, digests_sensor
from capacity_assets.pipeline.partitions import layout
from capacity_assets.pipeline.resources import build_resources, settings_tag

logging.getLogger("cmdstanpy").disabled = True
# Dagster marks backfill policies and a sensor's owners beta; they are its documented way to batch
# partitions, chosen knowingly here, so their notices are noise in every process that loads the
# code (Dagster resolves definitions lazily, so building them under a filter is not enough)
warnings.filterwarnings("ignore", category=dg.BetaWarning)

_BUILT: dict[tuple, dg.Definitions] = {}  # building costs about a second; a process reuses it


def build_defs(
    settings: CapacitySettings | None = None,
    smtp: SmtpSettings | None = None,
    credentials: dict[str, str] | None = None,
) -> dg.Definitions:
    """The definitions of ``settings`` (default: this process's environment, read now)."""
    settings = settings or config.load()
    smtp = smtp or config.smtp_settings()
    credentials = credentials if credentials is not None else config.prometheus_credentials()
    key = (settings, smtp, smtp.password, tuple(sorted(credentials.items())))
    if key not in _BUILT:
        with warnings.catch_warnings():
            # Dagster marks backfill policies beta; they are its documented way to batch
            # partitions, chosen knowingly here, so their notices are noise wherever code loads
            warnings.simplefilter("ignore", dg.BetaWarning)
            _BUILT[key] = _build(settings, smtp, credentials)
    return _BUILT[key]


def _build(settings: CapacitySettings, smtp: SmtpSettings, credentials: dict) -> dg.Definitions:
    lay = layout(settings)
    jobs, schedules = build_jobs(lay, settings_tag(settings))
    return dg.Definitions(
        # owners, code versions, column schemas and kinds, for every asset in one place
        assets=dg.map_asset_specs(
            catalog(settings).apply,
            [
                business_hierarchy,
                processed_data_asset(lay),
                *forecasting_assets(lay, settings.contenders),
                *tournament_assets(lay, settings.contenders),
                *risk_assets(lay),
                *whatif_assets(lay),
                *track_assets(lay, settings.keep_vintages),
                *ledger_assets(lay),
                prometheus_textfile,
                pool_assets,
            ],
        ),
        asset_checks=[checks.every_batch_fresh],
        jobs=[*jobs, capacity_notify],
        sensors=[digests_sensor(smtp.configured), run_failure_alert(settings, smtp.configured)],
        schedules=schedules,
        resources=build_resources(settings, smtp, credentials),
        executor=build_executor(settings),
        loggers={"console": console},
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster's tools load (`dg dev`, `dagster dev`, the code server)."""
    return build_defs()


def capacity_forecast_job():
    """The batch job, reconstructable in another process (for the multiprocess and dask executors)."""
    return build_defs().resolve_job_def("capacity_forecast")
