"""Resources and executor, chosen from CapacitySettings: the one switch a deployment turns."""

from __future__ import annotations

import dataclasses
import os

import dagster as dg

from capacity_assets.config import CapacitySettings
from capacity_assets.inputs.prometheus import has_password
from capacity_assets.pipeline.io_manager import build_io_manager


class SettingsResource(dg.ConfigurableResource):
    """CapacitySettings as a Dagster resource, so the UI shows every value a run used. The fields
    carry no defaults: those live once, in CapacitySettings (a test keeps the two field lists equal)."""

    metrics: str
    hierarchy: str
    db: str
    batches: int
    batches_per_run: int
    servers_per_run: int
    daily_agg: str
    interval: float
    backtest_months: int
    horizon_days: int
    threshold: float
    risk_days: int
    mape_warn: float
    mape_error_share: float
    executor: str
    storage: str
    demo_dir: str
    seed: int
    engines: str
    threshold_cpu: float | None
    threshold_memory: float | None
    threshold_disk: float | None
    threshold_network: float | None
    target: float
    target_cpu: float | None
    target_memory: float | None
    target_disk: float | None
    target_network: float | None
    lead_days: int
    reclaim_below: float
    round_gb: float
    keep_vintages: int
    drift_factor: float
    promql: str
    prom_server_label: str
    prom_history_days: int
    prom_cache: str
    dashboard_url: str

    @classmethod
    def wrap(cls, settings: CapacitySettings) -> SettingsResource:
        values = dataclasses.asdict(settings)
        # a Prometheus URL with a password in it is bound by name, so the UI's resource page shows
        # "CAPACITY_METRICS" instead of the password; the run reads the value when it starts
        if (
            has_password(settings.metrics)
            and os.environ.get("CAPACITY_METRICS", "").strip() == settings.metrics
        ):
            values["metrics"] = dg.EnvVar("CAPACITY_METRICS")
        return cls(**values)

    def get(self) -> CapacitySettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(CapacitySettings)}
        values["metrics"] = values["metrics"].strip()  # read by name, as the environment has it
        return CapacitySettings(**values)


def build_executor(settings: CapacitySettings) -> dg.ExecutorDefinition:
    """``in_process`` by default: a batch's steps share one process (imports paid once per run),
    while batches run in parallel as separate runs. ``multiprocess`` is Dagster's default, ``dask``
    sends steps to a Dask cluster (CAPACITY_DASK_ADDRESS, or a local one)."""
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    from dagster_dask import dask_executor  # optional extra: pip install .[dask]

    address = os.environ.get("CAPACITY_DASK_ADDRESS", "")
    cluster = (
        {"existing": {"address": address}}
        if address
        else {
            "local": {
                "n_workers": int(os.environ.get("CAPACITY_DASK_WORKERS", "2")),
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
            }
        }
    )
    return dask_executor.configured({"cluster": cluster})


def build_resources(settings: CapacitySettings) -> dict:
    return {"settings": SettingsResource.wrap(settings), "io_manager": build_io_manager(settings)}
