"""Daily utilisation from a Prometheus-compatible HTTP API, kept as files the file ingest reads unchanged.

``CAPACITY_METRICS=prometheus+http://host:9090`` makes the pipeline ask the server for one value per
server, resource and day, and cache them as Parquet files with the metrics file contract's columns
(``server_id``, ``resource``, ``timestamp``, ``utilization_pct`` in percent). Works with
Prometheus, VictoriaMetrics, Thanos, Mimir and anything else that implements
``/api/v1/query_range``.

One idea per module: ``urls`` (which values name a server, credentials kept out of sight),
``queries`` (the PromQL file), ``client`` (HTTP, retries, errors), ``fetch`` (daily values in
percent), ``cache`` (the Parquet cache ``sync`` keeps up to date). The names callers use are
importable from here. Only the URL helpers are loaded with the package, because the configuration
imports it to tell a server from files; the rest (requests, pandas) loads on first use.
"""

from __future__ import annotations

from importlib import import_module

from capacity_assets.inputs.prometheus.errors import NoSeriesError, PrometheusError
from capacity_assets.inputs.prometheus.urls import PREFIX, base_url, has_password, is_prometheus

_LAZY = {
    "ENV_PASSWORD": "client",
    "ENV_TOKEN": "client",
    "ENV_USER": "client",
    "AGGS": "queries",
    "DEFAULT_QUERIES": "queries",
    "Queries": "queries",
    "QueryFileError": "queries",
    "daily_query": "queries",
    "load_queries": "queries",
    "COLUMNS": "fetch",
    "fetch_daily": "fetch",
    "CACHE_GLOB": "cache",
    "complete_until": "cache",
    "last_complete_day": "cache",
    "sync": "cache",
}

__all__ = [
    "PREFIX",
    "NoSeriesError",
    "PrometheusError",
    "base_url",
    "has_password",
    "is_prometheus",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
