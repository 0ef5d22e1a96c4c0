"""The Prometheus source's errors, in a module of their own so that the URL helpers (imported by the
configuration) can raise them without loading the HTTP client."""

from __future__ import annotations


class PrometheusError(RuntimeError):
    """The server could not give the daily values; the message names the URL (never credentials) and the query."""

    def __init__(
        self, message: str, url: str = "", resource: str | None = None, query: str | None = None
    ):
        super().__init__(message)
        self.url, self.resource, self.query = url, resource, query


class NoSeriesError(PrometheusError):
    """The query matched nothing in the time range asked (a typo, a missing recording rule, no data yet)."""
