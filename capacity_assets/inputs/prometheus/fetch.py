"""Daily values per server and resource, in the metrics file contract's columns and percent.

The server aggregates each day (one ``query_range`` per resource at a one-day step), so what is
fetched is one point per series and day whatever the scrape interval; this module asks in chunks,
gives each value the day it describes, and brings ratios to percent.
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import requests

from capacity_assets.inputs.prometheus.client import _Client
from capacity_assets.inputs.prometheus.errors import NoSeriesError, PrometheusError
from capacity_assets.inputs.prometheus.queries import AGGS, DAY_S, _points_per_day, daily_query

COLUMNS = ["server_id", "resource", "timestamp", "utilization_pct"]
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
logger = logging.getLogger(__name__)


def _day(value) -> date:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.date()


def _epoch(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY_S


def _check_args(agg: str, server_label: str) -> None:
    if agg not in AGGS:
        raise ValueError(f"daily aggregation {agg!r} is not one of {', '.join(AGGS)}")
    if not isinstance(server_label, str) or not _LABEL.match(server_label):
        raise PrometheusError(
            f"CAPACITY_PROM_SERVER_LABEL: {server_label!r} is not a Prometheus label name "
            "(letters, digits and underscores, not starting with a digit)"
        )


def _fetch_resource(
    client: _Client,
    resource: str,
    expr: str,
    agg: str,
    server_label: str,
    first: date,
    last: date,
    max_points: int,
    empty_ok: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Raw daily values (server_id, timestamp, value) of one resource for the days first..last, by chunks."""
    query = daily_query(expr, agg)
    span = max(1, int(max_points) // _points_per_day(expr))
    frames, servers, requests_made = [], set(), 0
    day = first
    while day <= last:
        stop = min(last, day + timedelta(days=span - 1))
        # the value at D 00:00 covers (D−1 00:00, D 00:00]: it is day D−1's, so ask one day later
        result = client.query_range(query, _epoch(day) + DAY_S, _epoch(stop) + DAY_S, resource)
        requests_made += 1
        seen: dict[str, dict] = {}
        for series in result:
            labels = series.get("metric") or {}
            server = labels.get(server_label)
            if server is None or server == "":
                raise client.error(
                    f"a series has no {server_label!r} label ({_labels(labels)}); aggregate the "
                    f"expression by ({server_label}) or set the server label",
                    resource,
                    query,
                )
            if server in seen:
                raise client.error(
                    f"two series have {server_label}={server!r} ({_labels(seen[server])} and "
                    f"{_labels(labels)}); aggregate them, e.g. max by ({server_label}) (...)",
                    resource,
                    query,
                )
            seen[server] = labels
            values = series.get("values") or []
            if not values:
                continue
            arr = np.array([(float(t), _float(v)) for t, v in values], dtype=float)
            frames.append(pd.DataFrame({"server_id": server, "ts": arr[:, 0], "value": arr[:, 1]}))
        servers.update(seen)
        day = stop + timedelta(days=1)
    info = {"series": len(servers), "requests": requests_made, "query": query}
    if not servers:
        if empty_ok:
            return _empty_raw(), info
        raise client.error(
            f"no series at all for {first}..{last}; check the expression in the server's query "
            f"UI and that it has data for these days",
            resource,
            query,
            cls=NoSeriesError,
        )
    raw = pd.concat(frames, ignore_index=True)
    day_s = (np.floor(raw["ts"] / DAY_S).astype(np.int64) - 1) * DAY_S
    raw["timestamp"] = pd.to_datetime(day_s, unit="s").astype("datetime64[ns]")
    lo, hi = pd.Timestamp(first), pd.Timestamp(last)
    raw = raw[np.isfinite(raw["value"]) & raw["timestamp"].between(lo, hi)]
    raw = raw.drop_duplicates(["server_id", "timestamp"], keep="last")
    return raw[["server_id", "timestamp", "value"]].reset_index(drop=True), info


def _empty_raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns]"),
            "value": pd.Series(dtype=float),
        }
    )


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _labels(labels: dict) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _scale_of(raw: pd.DataFrame, declared: float | None) -> float:
    """The declared scale, else 100 when nothing fetched exceeds 1 (ratios 0–1), the file ingest's rule."""
    if declared is not None:
        return float(declared)
    top = raw["value"].max() if len(raw) else math.nan
    return 100.0 if not np.isnan(top) and top <= 1.0 else 1.0


def _as_contract(raw: pd.DataFrame, resource: str, scale: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_id": raw["server_id"].astype(str),
            "resource": resource,
            "timestamp": raw["timestamp"].astype("datetime64[ns]"),
            "utilization_pct": raw["value"].astype(float) * scale,
        }
    )[COLUMNS]


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_id": pd.Series(dtype=object),
            "resource": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns]"),
            "utilization_pct": pd.Series(dtype=float),
        }
    )


def fetch_daily(
    url: str,
    queries: dict[str, str],
    start,
    end,
    agg: str = "mean",
    server_label: str = "instance",
    *,
    timeout: float = 30,
    retries: int = 3,
    max_points: int = 11000,
    session: requests.Session | None = None,
    credentials: dict | None = None,
) -> pd.DataFrame:
    """One value per server, resource and UTC day from ``start`` to ``end`` (inclusive), in percent.

    Each resource is one ``query_range`` at a one-day step (split in chunks of at most
    ``max_points`` points per series; a subquery's 5-minute points count too, which also bounds the
    work asked of the server). The row of day D holds the aggregate of (D 00:00, D+1 00:00] UTC.
    Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential back-off.
    ``credentials`` is ``config.prometheus_credentials()`` (CAPACITY_PROM_USER/CAPACITY_PROM_PASSWORD
    or CAPACITY_PROM_TOKEN), besides any in the URL; ``None`` sends none.
    """
    _check_args(agg, server_label)
    first, last = _day(start), _day(end)
    if first > last:
        raise ValueError(f"start {first} is after end {last}")
    client = _Client(url, timeout, retries, session, credentials)
    try:
        scales = getattr(queries, "scales", {})
        frames = []
        for resource, expr in queries.items():
            began = time.monotonic()
            raw, info = _fetch_resource(
                client, resource, expr, agg, server_label, first, last, max_points
            )
            scale = _scale_of(raw, scales.get(resource))
            frames.append(_as_contract(raw, resource, scale))
            logger.info(
                f"{client.base}: {resource}: {info['series']} series, {len(raw)} rows for {first}..{last} "
                f"in {info['requests']} request(s), {time.monotonic() - began:.1f} s (scale ×{scale:g})"
            )
    finally:
        client.close()
    out = pd.concat(frames, ignore_index=True) if frames else _empty()
    return out.sort_values(["resource", "server_id", "timestamp"], ignore_index=True)
