"""Where the metrics come from: files as given, the built-in demo fleet, or a Prometheus-compatible
server read into a local daily cache. Every route ends in files the ingest reads the same way."""

from __future__ import annotations

from capacity_assets.demo.ensure import ensure_demo_fleet
from capacity_assets.inputs import prometheus


def prepare_metrics(settings, log=None, credentials=None) -> str:
    """Make the metrics readable (write the demo fleet once, bring the Prometheus cache up to date)
    and return the path or glob the file ingest reads.

    ``credentials`` for the server default to ``config.prometheus_credentials()``, read now so that a
    rotated token is picked up by the next run, not the next restart.
    """
    if settings.uses_prometheus:
        if credentials is None:
            # imported here: config imports inputs.prometheus, so a top-level import would be a cycle
            from capacity_assets.config import prometheus_credentials

            credentials = prometheus_credentials()
        return prometheus.sync(
            settings.metrics,
            settings.prom_cache,
            prometheus.last_complete_day(),
            settings.prom_history_days,
            prometheus.load_queries(settings.promql or None),
            agg=settings.daily_agg,
            server_label=settings.prom_server_label,
            log=log,
            credentials=credentials,
        )
    ensure_demo_fleet(settings)
    return settings.metrics_glob
