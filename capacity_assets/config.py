"""The one place configuration lives: environment variables with defaults, overridable by CLI flags.

``CapacitySettings`` is a plain frozen dataclass, so the CLI and the dashboard read it without
importing Dagster; ``pipeline.resources`` wraps it as a Dagster resource (the UI shows the values a
run used). It also names the storage (IO manager) and the executor, so a deployment swaps DuckDB
for a warehouse or the in-process executor for a distributed one by configuration alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from capacity_assets.forecasting.engines.base import ForecastConfig

DAILY_AGGS = ("mean", "max", "p95")
EXECUTORS = ("in_process", "multiprocess", "dask")
STORAGES = ("duckdb",)
DEMO_DIR = "data/demo"

# env var -> field; the README's configuration table mirrors this
ENV = {
    "CAPACITY_METRICS": "metrics",
    "CAPACITY_HIERARCHY": "hierarchy",
    "CAPACITY_DB": "db",
    "CAPACITY_BATCHES": "batches",
    "CAPACITY_DAILY_AGG": "daily_agg",
    "CAPACITY_INTERVAL": "interval",
    "CAPACITY_BACKTEST_MONTHS": "backtest_months",
    "CAPACITY_HORIZON_DAYS": "horizon_days",
    "CAPACITY_THRESHOLD": "threshold",
    "CAPACITY_RISK_DAYS": "risk_days",
    "CAPACITY_MAPE_WARN": "mape_warn",
    "CAPACITY_MAPE_ERROR_SHARE": "mape_error_share",
    "CAPACITY_EXECUTOR": "executor",
    "CAPACITY_STORAGE": "storage",
    "CAPACITY_DEMO_DIR": "demo_dir",
    "CAPACITY_SEED": "seed",
}


class ConfigError(ValueError):
    """A configuration value a user set is unusable; the message names the variable."""


def _env(name: str):
    default = DEFAULTS[ENV[name]]
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return type(default)(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None


@dataclass(frozen=True)
class CapacitySettings:
    """Pipeline settings; see the README's configuration table for each one."""

    metrics: str = ""
    hierarchy: str = ""
    db: str = "data/capacity.duckdb"
    batches: int = 20
    daily_agg: str = "mean"
    interval: float = 0.80
    backtest_months: int = 4
    horizon_days: int = 180
    threshold: float = 95.0
    risk_days: int = 90
    mape_warn: float = 20.0
    mape_error_share: float = 0.25
    executor: str = "in_process"
    storage: str = "duckdb"
    demo_dir: str = DEMO_DIR
    seed: int = 0

    @classmethod
    def from_env(cls) -> "CapacitySettings":
        settings = cls(**{field: _env(name) for name, field in ENV.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (self.daily_agg in DAILY_AGGS, "CAPACITY_DAILY_AGG", f"one of {', '.join(DAILY_AGGS)}"),
            (self.executor in EXECUTORS, "CAPACITY_EXECUTOR", f"one of {', '.join(EXECUTORS)}"),
            (self.storage in STORAGES, "CAPACITY_STORAGE", f"one of {', '.join(STORAGES)}"),
            (1 <= self.batches <= 1000, "CAPACITY_BATCHES", "between 1 and 1000"),
            (0 < self.interval < 1, "CAPACITY_INTERVAL", "between 0 and 1 (e.g. 0.8)"),
            (0 < self.threshold <= 100, "CAPACITY_THRESHOLD", "a percentage between 0 and 100"),
            (self.risk_days >= 1, "CAPACITY_RISK_DAYS", "at least 1"),
            (self.horizon_days >= self.risk_days, "CAPACITY_HORIZON_DAYS", "at least CAPACITY_RISK_DAYS"),
            (self.backtest_months >= 1, "CAPACITY_BACKTEST_MONTHS", "at least 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}")

    # derived values -------------------------------------------------------------------------
    @property
    def uses_demo(self) -> bool:
        return not self.metrics

    @property
    def metrics_glob(self) -> str:
        return self.metrics or str(Path(self.demo_dir) / "metrics" / "*.parquet")

    @property
    def hierarchy_path(self) -> str:
        if self.hierarchy:
            return self.hierarchy
        return str(Path(self.demo_dir) / "hierarchy.csv") if self.uses_demo else ""

    @property
    def forecast_config(self) -> ForecastConfig:
        return ForecastConfig(backtest_months=self.backtest_months, horizon_days=self.horizon_days,
                              interval=self.interval, seed=self.seed)


DEFAULTS = {f.name: f.default for f in fields(CapacitySettings)}


def batch_count() -> int:
    """Partition count, needed when the definitions load (before any resource exists)."""
    return int(_env("CAPACITY_BATCHES"))
