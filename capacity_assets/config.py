"""The one place configuration lives: environment variables with defaults, overridable by CLI flags.

This is the only module that reads ``CAPACITY_*`` variables, and only when asked (``load``,
``smtp_settings``, ``prometheus_credentials``), never at import time: the definitions are built
from one ``CapacitySettings`` (``pipeline.definitions.build_defs``), so a test, a worker on another
host or a code-server reload sees one consistent set. ``CapacitySettings`` is a plain frozen
dataclass, so the CLI and the dashboard read it without importing Dagster; ``pipeline.resources``
wraps it as Dagster resources (the UI shows the values a run used). It also names the storage and
the executor, so a deployment swaps them by configuration alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from capacity_assets.forecasting.engines.base import ForecastConfig
from capacity_assets.forecasting.engines.registry import CONTENDERS as FITTED
from capacity_assets.inputs.prometheus import is_prometheus
from capacity_assets.notify.smtp import SmtpSettings
from capacity_assets.schema import RESOURCES
from capacity_assets.store.db import Database
from capacity_assets.store.postgres import is_postgres

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
    "CAPACITY_BATCHES_PER_RUN": "batches_per_run",
    "CAPACITY_SERVERS_PER_RUN": "servers_per_run",
    "CAPACITY_DAILY_AGG": "daily_agg",
    "CAPACITY_INTERVAL": "interval",
    "CAPACITY_BACKTEST_MONTHS": "backtest_months",
    "CAPACITY_HORIZON_DAYS": "horizon_days",
    "CAPACITY_WINDOWS": "windows",
    "CAPACITY_THRESHOLD": "threshold",
    "CAPACITY_RISK_DAYS": "risk_days",
    "CAPACITY_MAPE_WARN": "mape_warn",
    "CAPACITY_MAPE_ERROR_SHARE": "mape_error_share",
    "CAPACITY_EXECUTOR": "executor",
    "CAPACITY_STORAGE": "storage",
    "CAPACITY_DEMO_DIR": "demo_dir",
    "CAPACITY_SEED": "seed",
    "CAPACITY_ENGINES": "engines",
    **{f"CAPACITY_THRESHOLD_{r.upper()}": f"threshold_{r}" for r in RESOURCES},
    "CAPACITY_TARGET": "target",
    **{f"CAPACITY_TARGET_{r.upper()}": f"target_{r}" for r in RESOURCES},
    "CAPACITY_LEAD_DAYS": "lead_days",
    "CAPACITY_RECLAIM_BELOW": "reclaim_below",
    "CAPACITY_ROUND_GB": "round_gb",
    "CAPACITY_KEEP_VINTAGES": "keep_vintages",
    "CAPACITY_DRIFT_FACTOR": "drift_factor",
    "CAPACITY_PROMQL": "promql",
    "CAPACITY_PROM_SERVER_LABEL": "prom_server_label",
    "CAPACITY_PROM_HISTORY_DAYS": "prom_history_days",
    "CAPACITY_PROM_CACHE": "prom_cache",
    "CAPACITY_DASHBOARD_URL": "dashboard_url",
    "CAPACITY_LOCK_TIMEOUT": "lock_timeout",
    "CAPACITY_DASHBOARD_LOCK_TIMEOUT": "dashboard_lock_timeout",
    "CAPACITY_DASK_ADDRESS": "dask_address",
    "CAPACITY_DASK_WORKERS": "dask_workers",
    "CAPACITY_ALERT_EMAIL": "alert_email",
    "CAPACITY_DAGSTER_URL": "dagster_url",
    "CAPACITY_PROM_TEXTFILE": "prom_textfile",
    "CAPACITY_OWNERS": "owners",
    "CAPACITY_SCENARIOS": "scenarios",
}
# what a value must look like, where a bare "not a valid float" would not say (also for validate)
EXPECTED = {
    "CAPACITY_LOCK_TIMEOUT": "the seconds to wait for the database, e.g. 600",
    "CAPACITY_DASHBOARD_LOCK_TIMEOUT": "the seconds a view waits for a writing run, e.g. 8",
}
OPTIONAL_FLOATS = {f"threshold_{r}" for r in RESOURCES} | {f"target_{r}" for r in RESOURCES}


class ConfigError(ValueError):
    """A configuration value a user set is unusable; the message names the variable."""


def _env(name: str, env: Mapping[str, str]):
    field = ENV[name]
    default = DEFAULTS[field]
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    kind = float if field in OPTIONAL_FLOATS else type(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (name in EXPECTED and not value >= 0):
        if name in EXPECTED:
            raise ConfigError(f"{name}={raw!r}: expected {EXPECTED[name]}") from None
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return value


@dataclass(frozen=True)
class CapacitySettings:
    """Pipeline settings; see the README's configuration table for each one."""

    metrics: str = ""
    hierarchy: str = ""
    db: str = "data/capacity.duckdb"
    batches: int = 20
    batches_per_run: int = 0  # batches one run of a UI backfill covers; 0: one run per core
    servers_per_run: int = 500  # most servers one run holds (memory: about 2 GB a process at 500)
    daily_agg: str = "mean"
    interval: float = 0.80
    backtest_months: int = 4
    horizon_days: int = 180
    # origins (months before the end) the tournament also scores from; "none": the backtest alone
    windows: str = ",".join(map(str, ForecastConfig.windows))
    threshold: float = 95.0
    risk_days: int = 90
    mape_warn: float = 20.0
    mape_error_share: float = 0.25
    executor: str = "in_process"
    storage: str = "duckdb"
    demo_dir: str = DEMO_DIR
    seed: int = 0
    engines: str = (
        "prophet,challenger,ets"  # fitted contenders; the combination of them always runs
    )
    threshold_cpu: float | None = None  # per-resource overrides of threshold (unset: threshold)
    threshold_memory: float | None = None
    threshold_disk: float | None = None
    threshold_network: float | None = None
    target: float = 80.0  # utilisation the capacity plan sizes to
    target_cpu: float | None = None
    target_memory: float | None = None
    target_disk: float | None = None
    target_network: float | None = None
    lead_days: int = 30  # needed_by = first crossing minus this
    reclaim_below: float = 30.0  # upper bound below this all horizon: capacity can be reclaimed
    round_gb: float = 8.0  # memory and disk changes rounded to this many GB
    keep_vintages: int = 26  # newest weekly forecasts kept per batch in forecast_history
    drift_factor: float = 1.5  # realised MAPE worse than backtest MAPE by this: the models drift
    promql: str = ""  # YAML of PromQL per resource; unset: the shipped node_exporter queries
    prom_server_label: str = "instance"
    prom_history_days: int = 1095
    prom_cache: str = "data/prometheus"
    dashboard_url: str = ""  # links in digests to the dashboard's deep dive
    lock_timeout: float = 600.0  # seconds a pipeline process waits for the database
    dashboard_lock_timeout: float = (
        8.0  # seconds a dashboard view waits before showing its last data
    )
    dask_address: str = ""  # tcp://host:port of a Dask scheduler; unset: a local cluster
    dask_workers: int = 2  # workers of the local Dask cluster (no CAPACITY_DASK_ADDRESS)
    alert_email: str = ""  # comma-separated addresses mailed when a run fails
    dagster_url: str = ""  # the Dagster UI's base URL, for links to a run in alerts
    prom_textfile: str = ""  # file written after each run in Prometheus' text format
    owners: str = ""  # comma-separated asset owners shown in the catalog (e-mails or team:name)
    scenarios: str = ""  # YAML of what-if scenarios (see whatif/scenarios.py); unset: none

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CapacitySettings:
        env = os.environ if env is None else env
        settings = cls(**{field: _env(name, env) for name, field in ENV.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (self.daily_agg in DAILY_AGGS, "CAPACITY_DAILY_AGG", f"one of {', '.join(DAILY_AGGS)}"),
            (self.executor in EXECUTORS, "CAPACITY_EXECUTOR", f"one of {', '.join(EXECUTORS)}"),
            (self.storage in STORAGES, "CAPACITY_STORAGE", f"one of {', '.join(STORAGES)}"),
            (1 <= self.batches <= 1000, "CAPACITY_BATCHES", "between 1 and 1000"),
            (self.batches_per_run >= 0, "CAPACITY_BATCHES_PER_RUN", "0 (one run per core) or more"),
            (self.servers_per_run >= 1, "CAPACITY_SERVERS_PER_RUN", "at least 1"),
            (0 < self.interval < 1, "CAPACITY_INTERVAL", "between 0 and 1 (e.g. 0.8)"),
            (0 < self.threshold <= 100, "CAPACITY_THRESHOLD", "a percentage between 0 and 100"),
            (self.risk_days >= 1, "CAPACITY_RISK_DAYS", "at least 1"),
            (
                self.horizon_days >= self.risk_days,
                "CAPACITY_HORIZON_DAYS",
                "at least CAPACITY_RISK_DAYS",
            ),
            (self.backtest_months >= 1, "CAPACITY_BACKTEST_MONTHS", "at least 1"),
            (
                self.window_months is not None,
                "CAPACITY_WINDOWS",
                "comma-separated whole months before the end of history, each less than "
                f"CAPACITY_BACKTEST_MONTHS ({self.backtest_months}), e.g. 3,2; or none for the "
                f"backtest alone (got {self.windows!r})",
            ),
            (
                bool(self.contenders) and set(self.contenders) <= set(FITTED),
                "CAPACITY_ENGINES",
                f"a comma-separated list of {', '.join(FITTED)}",
            ),
            (0 < self.target <= 100, "CAPACITY_TARGET", "a percentage between 0 and 100"),
            (self.lead_days >= 0, "CAPACITY_LEAD_DAYS", "at least 0"),
            (
                0 <= self.reclaim_below <= 100,
                "CAPACITY_RECLAIM_BELOW",
                "a percentage between 0 and 100",
            ),
            (self.round_gb > 0, "CAPACITY_ROUND_GB", "more than 0"),
            (self.keep_vintages >= 1, "CAPACITY_KEEP_VINTAGES", "at least 1"),
            (self.drift_factor >= 1, "CAPACITY_DRIFT_FACTOR", "at least 1"),
            (self.prom_history_days >= 1, "CAPACITY_PROM_HISTORY_DAYS", "at least 1"),
            (self.lock_timeout >= 0, "CAPACITY_LOCK_TIMEOUT", EXPECTED["CAPACITY_LOCK_TIMEOUT"]),
            (
                self.dashboard_lock_timeout >= 0,
                "CAPACITY_DASHBOARD_LOCK_TIMEOUT",
                EXPECTED["CAPACITY_DASHBOARD_LOCK_TIMEOUT"],
            ),
            (self.dask_workers >= 1, "CAPACITY_DASK_WORKERS", "at least 1"),
            (
                all("@" in a for a in self.alert_recipients),
                "CAPACITY_ALERT_EMAIL",
                "comma-separated e-mail addresses",
            ),
            (
                all("@" in o or o.startswith("team:") for o in self.owner_list),
                "CAPACITY_OWNERS",
                "comma-separated e-mail addresses or team:NAME",
            ),
            *[
                (
                    v is None or 0 < v <= 100,
                    f"CAPACITY_{f.upper()}",
                    "a percentage between 0 and 100",
                )
                for f in sorted(OPTIONAL_FLOATS)
                for v in [getattr(self, f)]
            ],
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}")
        if self.scenarios.strip():  # refused before anything runs, not after the models fit
            from capacity_assets.whatif.scenarios import ScenarioError, load

            try:
                load(self.scenarios.strip())
            except ScenarioError as e:
                raise ConfigError(f"CAPACITY_SCENARIOS: {e}") from None
        if self.executor == "dask" and self.dask_address.strip() and not is_postgres(self.db):
            # a worker on another host would stage into a file of its own that nobody publishes
            raise ConfigError(
                f"CAPACITY_DB={self.db!r} is a DuckDB file, and CAPACITY_EXECUTOR=dask with "
                f"CAPACITY_DASK_ADDRESS={self.dask_address.strip()} sends steps to workers that "
                "may run on other hosts, which cannot share one DuckDB file: set "
                "CAPACITY_DB=postgresql://user@host:port/dbname (the same on every host), or unset "
                "CAPACITY_DASK_ADDRESS to run a local Dask cluster on this machine"
            )

    # derived values -------------------------------------------------------------------------
    @property
    def contenders(self) -> tuple[str, ...]:
        """The fitted contenders, in registry order (it decides ties)."""
        asked = {e.strip() for e in self.engines.split(",") if e.strip()}
        return tuple(n for n in FITTED if n in asked) + tuple(sorted(asked - set(FITTED)))

    @property
    def window_months(self) -> tuple[int, ...] | None:
        """CAPACITY_WINDOWS as months, latest origin last; None when it is not valid."""
        raw = self.windows.strip().lower()
        if raw in ("none", ""):
            return ()
        items = [m.strip() for m in raw.split(",")]
        if not all(m.isascii() and m.isdigit() for m in items):
            return None
        months = sorted({int(m) for m in items}, reverse=True)
        if raw == DEFAULTS["windows"]:  # not chosen: a short backtest simply has fewer windows
            return tuple(m for m in months if 0 < m < self.backtest_months)
        return tuple(months) if all(0 < m < self.backtest_months for m in months) else None

    @property
    def alert_recipients(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.alert_email.split(",") if a.strip())

    @property
    def owner_list(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.owners.split(",") if o.strip())

    @property
    def threshold_per_resource(self) -> dict[str, float | None]:
        return {r: getattr(self, f"threshold_{r}") for r in RESOURCES}

    @property
    def target_per_resource(self) -> dict[str, float | None]:
        return {r: getattr(self, f"target_{r}") for r in RESOURCES}

    @property
    def uses_demo(self) -> bool:
        return not self.metrics

    @property
    def uses_prometheus(self) -> bool:
        return is_prometheus(self.metrics)

    @property
    def metrics_glob(self) -> str:
        """Where the file ingest reads: the files given, the demo fleet, or the Prometheus cache."""
        if self.uses_prometheus:
            return str(Path(self.prom_cache) / "daily_*.parquet")
        return self.metrics or str(Path(self.demo_dir) / "metrics" / "*.parquet")

    @property
    def hierarchy_path(self) -> str:
        if self.hierarchy:
            return self.hierarchy
        return str(Path(self.demo_dir) / "hierarchy.csv") if self.uses_demo else ""

    @property
    def database(self) -> Database:
        """CAPACITY_DB with how long to wait for it (CAPACITY_LOCK_TIMEOUT)."""
        return Database(self.db, self.lock_timeout)

    @property
    def forecast_config(self) -> ForecastConfig:
        return ForecastConfig(
            backtest_months=self.backtest_months,
            horizon_days=self.horizon_days,
            interval=self.interval,
            seed=self.seed,
            windows=self.window_months or (),
        )


DEFAULTS = {f.name: f.default for f in fields(CapacitySettings)}


def load(env: Mapping[str, str] | None = None) -> CapacitySettings:
    """The settings of ``env`` (default: this process's environment), validated."""
    return CapacitySettings.from_env(env)


def smtp_settings(env: Mapping[str, str] | None = None) -> SmtpSettings:
    """Where digests and alerts are mailed: CAPACITY_SMTP_HOST, _PORT, _USER, _PASSWORD, _FROM,
    _STARTTLS (true/false) and _TIMEOUT (seconds). The sender defaults to the user when it is an
    address. Raises ConfigError naming the variable."""
    env = os.environ if env is None else env

    def get(key: str, default: str = "") -> str:
        return env.get(f"CAPACITY_SMTP_{key}", default).strip()

    try:
        return SmtpSettings.parse(
            host=get("HOST"),
            port=get("PORT"),
            user=get("USER"),
            password=env.get("CAPACITY_SMTP_PASSWORD", ""),
            sender=get("FROM"),
            starttls=get("STARTTLS"),
            timeout=get("TIMEOUT"),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


PROM_CREDENTIALS = {
    "token": "CAPACITY_PROM_TOKEN",
    "user": "CAPACITY_PROM_USER",
    "password": "CAPACITY_PROM_PASSWORD",
}


def prometheus_credentials(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Prometheus server's credentials besides the URL's own: {token, user, password}; token
    and user '' when unset, the password None (an empty password is a password)."""
    env = os.environ if env is None else env
    return {
        k: env.get(name, None if k == "password" else "") for k, name in PROM_CREDENTIALS.items()
    }
