"""Resources and executor, chosen from CapacitySettings: the one switch a deployment turns."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg

from capacity_assets.config import ENV, PROM_CREDENTIALS, CapacitySettings
from capacity_assets.inputs.fingerprint import result_settings
from capacity_assets.inputs.prometheus import has_password
from capacity_assets.inputs.sources import prepare_metrics
from capacity_assets.notify.smtp import SmtpSettings
from capacity_assets.pipeline.io_manager import build_io_manager
from capacity_assets.store import postgres

# run tag: the launcher's result settings (JSON), so a step on another host can check its own
SETTINGS_TAG = "capacity/settings"


def settings_tag(settings: CapacitySettings) -> dict[str, str]:
    """The run tag carrying ``settings``' result settings, for every run a launcher starts."""
    return {SETTINGS_TAG: json.dumps(result_settings(settings), sort_keys=True)}


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
    windows: str
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
    lock_timeout: float
    dashboard_lock_timeout: float
    dask_address: str
    dask_workers: int
    alert_email: str
    dagster_url: str
    prom_textfile: str
    owners: str
    scenarios: str

    @classmethod
    def wrap(cls, settings: CapacitySettings) -> SettingsResource:
        values = dataclasses.asdict(settings)
        # a password in a Prometheus URL stays out of the UI: PrometheusResource carries the URL
        values["metrics"] = (
            postgres.redact(settings.metrics) if settings.uses_prometheus else settings.metrics
        )
        # a PostgreSQL password in CAPACITY_DB likewise: bound by name, read when a run starts
        if postgres.has_password(settings.db):
            values["db"] = dg.EnvVar("CAPACITY_DB")
        return cls(**values)

    def get(self) -> CapacitySettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(CapacitySettings)}
        return CapacitySettings(**{**values, "db": values["db"].strip()})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail a step whose process (a Dask worker on another host) reads other result settings
        than the run's launcher did: its batch would be computed with them and published as one."""
        run = context.run
        tag = run.tags.get(SETTINGS_TAG) if run is not None else None
        if tag is None:
            return
        theirs = json.loads(tag)
        ours = json.loads(json.dumps(result_settings(self.get())))
        names = {field: name for name, field in ENV.items()}
        differing = [
            f"{names.get(k, k)} differs on this worker: {_shown(ours.get(k))} here, "
            f"{_shown(theirs.get(k))} in the run"
            for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)
        ]
        if differing:
            raise dg.Failure(
                "; ".join(differing) + "; every host needs the same CAPACITY_* settings",
                allow_retries=False,
            )


def _shown(value) -> str:
    return "unset" if value is None else str(value)


def _bound(name: str, value: str | None):
    """A secret bound by name, so the UI's resource page shows the variable, not the value; left
    as it is where it is empty or unset (an EnvVar of an unset variable fails the run)."""
    return dg.EnvVar(name) if value else value


class PrometheusResource(dg.ConfigurableResource):
    """The Prometheus-compatible server CAPACITY_METRICS names ('' when the metrics are files), with
    its credentials. Secrets are bound by name (dg.EnvVar): a run reads them when it starts."""

    url: str = ""
    token: str = ""
    user: str = ""
    password: str | None = None

    @classmethod
    def wrap(cls, settings: CapacitySettings, credentials: dict[str, str]) -> PrometheusResource:
        url = settings.metrics if settings.uses_prometheus else ""
        return cls(
            url=_bound("CAPACITY_METRICS", url) if has_password(url) else url,
            token=_bound(PROM_CREDENTIALS["token"], credentials.get("token", "")),
            user=credentials.get("user", ""),
            password=_bound(PROM_CREDENTIALS["password"], credentials.get("password")),
        )

    def metrics_files(self, settings: CapacitySettings, log=None) -> str:
        """The path or glob the file ingest reads: the Prometheus server's days brought into the
        local cache first (the one place a run talks to it), or the demo fleet written once."""
        if self.url:
            settings = dataclasses.replace(settings, metrics=self.url.strip())
        credentials = {"token": self.token, "user": self.user, "password": self.password}
        return prepare_metrics(settings, log=log, credentials=credentials)


class SmtpResource(dg.ConfigurableResource):
    """The SMTP server digests go through (CAPACITY_SMTP_*; no host: nothing is sent). The
    password is bound by name (dg.EnvVar), never shown in the UI or put in run config."""

    host: str = ""
    port: int = 25
    user: str = ""
    password: str = ""
    sender: str = ""
    starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def wrap(cls, smtp: SmtpSettings) -> SmtpResource:
        values = {f.name: getattr(smtp, f.name) for f in dataclasses.fields(SmtpSettings)}
        return cls(**{**values, "password": _bound("CAPACITY_SMTP_PASSWORD", smtp.password)})

    def get(self) -> SmtpSettings:
        return SmtpSettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SmtpSettings)}
        )


def build_resources(
    settings: CapacitySettings, smtp: SmtpSettings, credentials: dict[str, str]
) -> dict:
    """One resource per outside system: the store (io_manager), Prometheus, SMTP; and the settings."""
    return {
        "settings": SettingsResource.wrap(settings),
        "prometheus": PrometheusResource.wrap(settings, credentials),
        "smtp": SmtpResource.wrap(smtp),
        "io_manager": build_io_manager(settings),
    }
