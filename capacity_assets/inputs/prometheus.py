"""Daily utilisation from a Prometheus-compatible HTTP API, kept as files the file ingest reads unchanged.

``CAPACITY_METRICS=prometheus+http://host:9090`` makes the pipeline ask the server for one value per
server, resource and day, and cache them as Parquet files with the metrics file contract's columns
(``server_id``, ``resource``, ``timestamp``, ``utilization_pct`` in percent). A cache rather than a
second ingest path: validation, cleaning and counting stay in one place (``files``), every batch
scans local files instead of querying the server, and after the first sync the server only answers
for the days that are new.

The server does the daily aggregation (one ``query_range`` per resource at a one-day step), so the
amount fetched is one point per series and day whatever the scrape interval. Works with Prometheus,
VictoriaMetrics, Thanos, Mimir and anything else that implements ``/api/v1/query_range``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
import yaml

from capacity_assets.inputs.files import InputError
from capacity_assets.schema import RESOURCES

PREFIX = "prometheus+"
DEFAULT_QUERIES = Path(__file__).with_name("promql") / "node_exporter.yaml"
ENV_USER, ENV_PASSWORD, ENV_TOKEN = (
    "CAPACITY_PROM_USER",
    "CAPACITY_PROM_PASSWORD",
    "CAPACITY_PROM_TOKEN",
)
AGGS = {
    "mean": "avg_over_time({})",
    "max": "max_over_time({})",
    "p95": "quantile_over_time(0.95, {})",
}
DAY_S = 86400
# inner step of the subquery that turns an arbitrary expression into a range: recording rules run
# every 1 m and scrapes every 15–60 s, so 5 m sees a fresh sample at every point and stays within
# Prometheus' default 5 m lookback
RESOLUTION, RESOLUTION_S = "5m", 300
CACHE_FORMAT = 1  # bump when the cache's meaning changes: every resource is then refetched
MANIFEST = "manifest.json"
CACHE_GLOB = "daily_*.parquet"
COLUMNS = ["server_id", "resource", "timestamp", "utilization_pct"]
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STRING = r'"(?:[^"\\]|\\.)*"'
# a bare selector (metric name with optional matchers): it can take a range directly, which reads
# every raw sample; anything else needs a subquery
_SELECTOR = re.compile(
    rf"^\s*(?:[A-Za-z_:][A-Za-z0-9_:]*\s*(?:\{{(?:[^{{}}\"]|{_STRING})*\}})?"
    rf"|\{{(?:[^{{}}\"]|{_STRING})*\}})\s*$"
)
logger = logging.getLogger(__name__)


class PrometheusError(RuntimeError):
    """The server could not give the daily values; the message names the URL (never credentials) and the query."""

    def __init__(
        self, message: str, url: str = "", resource: str | None = None, query: str | None = None
    ):
        super().__init__(message)
        self.url, self.resource, self.query = url, resource, query


class NoSeriesError(PrometheusError):
    """The query matched nothing in the time range asked (a typo, a missing recording rule, no data yet)."""


class QueryFileError(InputError):
    """The PromQL file (CAPACITY_PROMQL) cannot be used; the message names the file and the key."""


class Queries(dict):
    """resource -> PromQL expression, plus the scale each entry declared (1, 100, or None = detect)."""

    def __init__(self, exprs=(), scales: dict | None = None, source: str | None = None):
        super().__init__(exprs)
        self.scales: dict[str, float | None] = dict(scales or {})
        self.source = source


# ---------------------------------------------------------------------------------------------- URLs


def is_prometheus(url: str) -> bool:
    """Whether CAPACITY_METRICS names a server rather than files (a bad scheme after the prefix still counts,
    so it gets a clear error from ``base_url`` instead of 'file does not exist')."""
    return isinstance(url, str) and url.strip().lower().startswith(PREFIX)


def has_password(url: str) -> bool:
    """Whether a CAPACITY_METRICS value carries credentials that must not be shown."""
    return is_prometheus(url) and _redact(url) != url


def _redact(text: str) -> str:
    return re.sub(r"//[^/@\s]*@", "//***@", str(text))


def _split(url: str) -> tuple[str, tuple[str, str] | None]:
    """(base URL without credentials, credentials found in the URL)."""
    raw = url.strip() if isinstance(url, str) else url
    if not is_prometheus(raw):
        raise PrometheusError(
            f"{_redact(raw)!r} is not a Prometheus URL: expected prometheus+http://host:port "
            f"or prometheus+https://host:port",
            url=_redact(raw),
        )
    rest = raw[len(PREFIX) :]
    try:
        parts = urlsplit(rest)
        port = parts.port
    except ValueError as e:
        raise PrometheusError(
            f"{_redact(raw)!r} is not a valid URL ({e})", url=_redact(raw)
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise PrometheusError(
            f"{_redact(raw)!r}: expected prometheus+http://host:port or prometheus+https://host:port "
            f"(the part after 'prometheus+' must be an http or https URL)",
            url=_redact(raw),
        )
    if parts.query or parts.fragment:
        raise PrometheusError(
            f"{_redact(raw)!r}: the URL cannot have query parameters (?…) or a fragment (#…); "
            f"give the API's root, the part before /api/v1",
            url=_redact(raw),
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{port}" if port is not None else "")
    base = f"{scheme}://{netloc}{parts.path}".rstrip("/")
    creds = (parts.username or "", parts.password or "") if parts.username is not None else None
    return base, creds


def base_url(url: str) -> str:
    """The server's base URL from a CAPACITY_METRICS value: prefix, credentials and trailing slash removed,
    so it is safe to print. Give the original value to ``fetch_daily``/``sync``."""
    return _split(url)[0]


# ------------------------------------------------------------------------------------------ queries


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last, silently:
    a query file edited by appending a second `cpu:` would run a query nobody reviewed)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_queries(path: str | None) -> Queries:
    """resource -> PromQL from a YAML file (CAPACITY_PROMQL); ``None`` reads the shipped node_exporter file.

    An entry is either the expression itself or a mapping with ``expr`` and an optional ``scale``
    (1: the values are percent, 100: ratios 0–1). The format is documented in the shipped file.
    """
    p = Path(path) if path else DEFAULT_QUERIES
    if not p.exists():
        raise QueryFileError(f"{p}: PromQL query file does not exist (CAPACITY_PROMQL)")
    if not p.is_file():
        raise QueryFileError(f"{p}: is a folder, not a PromQL query file (CAPACITY_PROMQL)")
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError:
        raise QueryFileError(
            f"{p}: not a text file (CAPACITY_PROMQL must be a YAML file)"
        ) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise QueryFileError(f"{p}: not valid YAML{at}: {problem}") from None
    if doc is None or doc == {}:
        raise QueryFileError(
            f"{p}: the query file is empty; give one PromQL expression per resource "
            f"({', '.join(RESOURCES)})"
        )
    if not isinstance(doc, dict):
        raise QueryFileError(
            f"{p}: expected a mapping of resource to PromQL expression "
            f"(e.g. `cpu: 'instance:node_cpu_utilisation:rate5m'`), found a YAML {type(doc).__name__}"
        )
    exprs, scales = {}, {}
    for key, value in doc.items():
        name = str(key).strip().lower()
        if name not in RESOURCES:
            raise QueryFileError(
                f"{p}: unknown resource {key!r}; the resources are {', '.join(RESOURCES)}"
            )
        if name in exprs:
            raise QueryFileError(f"{p}: resource {name!r} is given twice")
        scale = None
        if isinstance(value, dict):
            unknown = [str(k) for k in value if k not in ("expr", "scale")]
            if unknown:
                raise QueryFileError(
                    f"{p}: {key}: unknown setting {unknown[0]!r}; the settings are expr and scale"
                )
            if "scale" in value:
                scale = value["scale"]
                if (
                    isinstance(scale, bool)
                    or not isinstance(scale, (int, float))
                    or scale not in (1, 100)
                ):
                    raise QueryFileError(
                        f"{p}: {key}: scale must be 1 (values are percent) or 100 (values are "
                        f"ratios 0–1), not {scale!r}"
                    )
                scale = float(scale)
            value = value.get("expr")
            if value is None:
                raise QueryFileError(f"{p}: {key}: missing expr (the PromQL expression)")
        if not isinstance(value, str):
            raise QueryFileError(
                f"{p}: {key}: expected a PromQL expression as text, or a mapping with expr and "
                f"scale, not {type(value).__name__} {value!r}"
            )
        if not value.strip():
            raise QueryFileError(f"{p}: {key}: the PromQL expression is empty")
        exprs[name], scales[name] = value.strip(), scale
    ordered = [r for r in RESOURCES if r in exprs]
    return Queries({r: exprs[r] for r in ordered}, {r: scales[r] for r in ordered}, source=str(p))


def daily_query(expr: str, agg: str = "mean") -> str:
    """The PromQL whose value at D 00:00 UTC is the aggregate of day D−1 (the window (D−1 00:00, D 00:00]).

    A plain selector takes ``[1d]`` directly, so every raw sample counts; any other expression has
    to become a subquery, sampled every 5 minutes. Newlines around the expression keep a trailing
    ``# comment`` in it from swallowing the closing parenthesis.
    """
    if agg not in AGGS:
        raise ValueError(f"daily aggregation {agg!r} is not one of {', '.join(AGGS)}")
    expr = expr.strip()
    if _SELECTOR.match(expr):
        return AGGS[agg].format(f"{expr}[1d]")
    return AGGS[agg].format(f"(\n{expr}\n)[1d:{RESOLUTION}]")


def _points_per_day(expr: str) -> int:
    return 1 if _SELECTOR.match(expr.strip()) else DAY_S // RESOLUTION_S


# ---------------------------------------------------------------------------------------------- HTTP


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


class _Client:
    """One server: base URL, credentials from the environment (read now, at call time), retries."""

    def __init__(self, url: str, timeout: float, retries: int, session: requests.Session | None):
        self.base, url_creds = _split(url)
        self.endpoint = self.base + "/api/v1/query_range"
        self.timeout, self.retries = float(timeout), max(0, int(retries))
        token = os.environ.get(ENV_TOKEN) or None
        user, password = os.environ.get(ENV_USER) or None, os.environ.get(ENV_PASSWORD)
        # never shown anyway; scrubbed as a second line of defence (too short ones would mangle the text)
        self._secrets = [
            s for s in (token, password, url_creds[1] if url_creds else None) if s and len(s) >= 4
        ]
        if token and user:
            raise self.error(
                f"both {ENV_TOKEN} and {ENV_USER} are set: set one of them (bearer token or basic auth)"
            )
        in_url = bool(url_creds and any(url_creds))  # 'https://:password@host' counts too
        if in_url and (
            token or user
        ):  # one would be dropped silently, and a 401 would blame the wrong one
            raise self.error(
                f"the URL carries credentials and {ENV_TOKEN if token else ENV_USER} is set too: "
                f"give them one way only"
            )
        if user and password is None:
            raise self.error(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
        self.session = session or requests.Session()
        self.own_session = session is None
        self.auth = (user, password) if user else (url_creds if in_url else None)
        self.headers = {"Accept": "application/json", "User-Agent": "capacity_assets"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.auth_kind = "token" if token else ("env" if user else ("url" if self.auth else None))

    def close(self) -> None:
        if self.own_session:
            self.session.close()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _redact(text)

    def error(
        self,
        problem: str,
        resource: str | None = None,
        query: str | None = None,
        cls=PrometheusError,
    ):
        where = f"; {resource} query: {_one_line(query, 2000)}" if query else ""
        return cls(
            self.scrub(f"Prometheus at {self.base}: {problem}{where}"),
            url=self.base,
            resource=resource,
            query=query,
        )

    def query_range(self, query: str, start: int, end: int, resource: str) -> list[dict]:
        """The matrix of one range query at a one-day step, after retries; errors name URL and query."""
        data = {"query": query, "start": str(start), "end": str(end), "step": str(DAY_S)}
        problem, attempts = "", self.retries + 1
        for attempt in range(attempts):
            wait = min(0.5 * 2**attempt, 30.0)
            try:
                r = self.session.post(
                    self.endpoint,
                    data=data,
                    timeout=self.timeout,
                    auth=self.auth,
                    headers=self.headers,
                    allow_redirects=False,
                )
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except requests.ConnectionError as e:
                problem = f"cannot connect ({_reason(e)})"
            except requests.RequestException as e:
                raise self.error(f"request failed ({_reason(e)})", resource, query) from None
            else:
                if r.status_code == 429 or r.status_code >= 500:
                    problem = f"HTTP {r.status_code}: {self._error_text(r)}"
                    wait = max(wait, _retry_after(r))
                else:
                    return self._matrix(r, query, resource)
            if attempt + 1 < attempts:
                logger.debug(f"{self.base}: {problem}; retrying in {wait:g} s")
                time.sleep(wait)
        tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        raise self.error(problem + tries, resource, query)

    def _error_text(self, r: requests.Response) -> str:
        try:
            body = r.json()
            if isinstance(body, dict) and body.get("error"):
                kind = body.get("errorType")
                kind = (
                    f"{kind}: " if kind and not str(kind).isdigit() else ""
                )  # VictoriaMetrics repeats the code
                return _one_line(kind + str(body["error"]), 2000)
        except ValueError:
            pass
        return _one_line(r.text or r.reason or "(empty answer)")

    def _matrix(self, r: requests.Response, query: str, resource: str) -> list[dict]:
        code = r.status_code
        if 300 <= code < 400:
            raise self.error(
                f"HTTP {code}: the server redirects to {r.headers.get('Location', '?')}; "
                f"use that address in CAPACITY_METRICS",
                resource,
                query,
            )
        if code == 401 or code == 403:
            sent = {
                "env": f"the credentials from {ENV_USER}/{ENV_PASSWORD}",
                "url": "the credentials from the URL",
                "token": f"the token from {ENV_TOKEN}",
            }.get(self.auth_kind)
            what = (
                f"the server refused {sent}"
                if sent
                else f"the server needs credentials: set {ENV_USER} and {ENV_PASSWORD}, or {ENV_TOKEN}"
            )
            raise self.error(
                f"HTTP {code} {'Unauthorized' if code == 401 else 'Forbidden'}: {what}",
                resource,
                query,
            )
        if code == 404:
            raise self.error(
                "HTTP 404: no Prometheus API here; the URL must be the API's root, the part before "
                "/api/v1 (e.g. http://host:9090, or http://vmselect:8481/select/0/prometheus)",
                resource,
                query,
            )
        if code != 200:
            raise self.error(
                f"the server answered HTTP {code}: {self._error_text(r)}", resource, query
            )
        try:
            body = r.json()
        except ValueError:
            raise self.error(
                f"the answer is not Prometheus JSON (Content-Type {r.headers.get('Content-Type', '?')}, "
                f"starts with {_one_line(r.text, 120)!r}); is this the Prometheus API's root?",
                resource,
                query,
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            text = body.get("error") if isinstance(body, dict) else None
            raise self.error(
                f"the server answered an error: {_one_line(text or body)}", resource, query
            )
        result = (body.get("data") or {}).get("result")
        kind = (body.get("data") or {}).get("resultType")
        if kind != "matrix" or not isinstance(result, list):
            raise self.error(f"expected a matrix from query_range, got {kind!r}", resource, query)
        for warning in body.get("warnings") or []:
            logger.warning(
                self.scrub(
                    f"Prometheus at {self.base}: {resource}: server warning: {_one_line(warning)}"
                )
            )
        return result


def _reason(e: Exception) -> str:
    text = str(e)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found[-1].strip()
    for hint in ("Name or service not known", "Connection refused", "certificate verify failed"):
        if hint in text:
            return hint
    return _one_line(text, 300)


def _retry_after(r: requests.Response) -> float:
    try:
        return min(float(r.headers.get("Retry-After", 0)), 30.0)
    except ValueError:
        return 0.0


# -------------------------------------------------------------------------------------------- fetch


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
) -> pd.DataFrame:
    """One value per server, resource and UTC day from ``start`` to ``end`` (inclusive), in percent.

    Each resource is one ``query_range`` at a one-day step (split in chunks of at most
    ``max_points`` points per series; a subquery's 5-minute points count too, which also bounds the
    work asked of the server). The row of day D holds the aggregate of (D 00:00, D+1 00:00] UTC.
    Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential back-off.
    Credentials come from CAPACITY_PROM_USER/CAPACITY_PROM_PASSWORD or CAPACITY_PROM_TOKEN.
    """
    _check_args(agg, server_label)
    first, last = _day(start), _day(end)
    if first > last:
        raise ValueError(f"start {first} is after end {last}")
    client = _Client(url, timeout, retries, session)
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


# --------------------------------------------------------------------------------------------- cache


def last_complete_day(now: datetime | None = None) -> date:
    """Yesterday in UTC: the newest day whose window is over, the usual ``end`` of ``sync``."""
    now = now or datetime.now(timezone.utc)
    return (now.astimezone(timezone.utc) if now.tzinfo else now).date() - timedelta(days=1)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a hidden temporary file in the same folder, flush it to disk, then rename it over ``path``:
    a killed sync leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_manifest(cache: Path, say) -> dict:
    path = cache / MANIFEST
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        resources = doc.get("resources")
        if doc.get("format") != CACHE_FORMAT or not isinstance(resources, dict):
            raise ValueError("unknown format")
        return resources
    except (OSError, ValueError, AttributeError) as e:
        say(f"{path}: unreadable cache manifest ({e}); refetching everything")
        return {}


def _write_manifest(cache: Path, resources: dict) -> None:
    text = (
        json.dumps({"format": CACHE_FORMAT, "resources": resources}, indent=2, sort_keys=True)
        + "\n"
    )
    _write_atomic(cache / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))


def _say(log_to) -> Callable[[str], None]:
    if log_to is None:
        return logger.info
    if isinstance(log_to, logging.Logger):
        return log_to.info
    return log_to


def sync(
    url: str,
    cache_dir: str,
    end,
    history_days: int,
    queries: dict[str, str],
    agg: str = "mean",
    server_label: str = "instance",
    log=None,
    *,
    timeout: float = 30,
    retries: int = 3,
    max_points: int = 11000,
    session: requests.Session | None = None,
) -> str:
    """Bring the local cache to the ``history_days`` days ending with ``end`` and return the glob of its files.

    ``end`` is the last complete UTC day (normally yesterday). The first call fetches the whole
    window; later calls fetch only the days the cache does not hold, and drop the days that fell
    out of the window. A resource is fetched again from scratch when its expression, declared
    scale, ``agg``, ``server_label`` or the server URL change (``manifest.json`` records them). A
    scale detected on the first fetch is kept for the later days. One Parquet file per resource,
    replaced atomically; concurrent syncs of one folder take turns on a lock file.
    """
    _check_args(agg, server_label)
    say = _say(log)
    base = base_url(url)
    last = _day(end)
    if last > last_complete_day():
        raise ValueError(
            f"sync end {last} is not a complete day yet (the last one is {last_complete_day()} UTC); "
            f"a partial day would stay in the cache"
        )
    if int(history_days) < 1:
        raise ValueError(f"history_days must be at least 1, not {history_days!r}")
    first = last - timedelta(days=int(history_days) - 1)
    if not queries:
        raise ValueError("no PromQL queries given")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    scales = getattr(queries, "scales", {})
    with open(cache / ".sync.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in cache.glob(".daily_*.tmp"):
            stale.unlink(missing_ok=True)
        manifest = _read_manifest(cache, say)
        for resource in RESOURCES:  # resources no longer queried must not be read by the ingest
            path = cache / f"daily_{resource}.parquet"
            if resource not in queries and (path.exists() or resource in manifest):
                path.unlink(missing_ok=True)
                manifest.pop(resource, None)
                _write_manifest(cache, manifest)
                say(f"{resource}: no longer queried; removed from the cache")
        client = _Client(url, timeout, retries, session)
        try:
            newest = {
                resource: _sync_resource(
                    client,
                    cache,
                    manifest,
                    resource,
                    expr,
                    scales.get(resource),
                    agg,
                    server_label,
                    first,
                    last,
                    max_points,
                    base,
                    say,
                )
                for resource, expr in queries.items()
            }
            _refuse_silent_queries(client, newest)
        finally:
            client.close()
    return str(cache / CACHE_GLOB)


class _Newest(NamedTuple):
    """What a resource's sync asked for last: its newest days, and what came back."""

    span: tuple[date, date]
    series: int
    query: str
    last_day: date | None  # the newest day with data


def _refuse_silent_queries(client: _Client, newest: dict[str, _Newest | None]) -> None:
    """A query that stops matching after the first sync (a renamed metric or recording rule) would
    otherwise leave its resource's data ending that day, with every run green: when another resource
    has data on a day of the newest span asked for it, yet it matched nothing there, the sync stops."""
    for resource, got in newest.items():
        if not got or got.series:
            continue
        lo, hi = got.span
        others = {
            r: g.last_day
            for r, g in newest.items()
            if g and g.last_day is not None and g.last_day >= lo
        }
        if others:
            other, day = next(iter(others.items()))
            raise client.error(
                f"no series at all for {lo}..{hi}, while the {other} query has data up to {day}: was "
                f"a metric or recording rule renamed, or do none of its servers report any more? "
                f"Check the expression in the server's query UI",
                resource,
                got.query,
                cls=NoSeriesError,
            )


LATE_DAYS = (
    7  # a server this many days behind the newest one has stopped reporting; it is not waited for
)


def complete_until(rows: pd.DataFrame, start: date) -> date:
    """The last day every server still reporting has data for in ``rows`` (server_id, timestamp; the
    day before ``start`` when there are none). A server silent for over LATE_DAYS is taken as gone,
    not late, so one decommissioned server does not make every sync fetch its silence again."""
    if rows.empty:
        return start - timedelta(days=1)
    last_day = pd.to_datetime(rows.groupby("server_id")["timestamp"].max()).dt.date
    newest = last_day.max()
    return min(d for d in last_day if d >= newest - timedelta(days=LATE_DAYS))


def _sync_resource(
    client: _Client,
    cache: Path,
    manifest: dict,
    resource: str,
    expr: str,
    declared,
    agg: str,
    server_label: str,
    first: date,
    last: date,
    max_points: int,
    base: str,
    say,
) -> _Newest | None:
    """Sync one resource; returns what its newest days asked for gave, or None when it asked for none."""
    began = time.monotonic()
    path = cache / f"daily_{resource}.parquet"
    setting = {
        "format": CACHE_FORMAT,
        "url": base,
        "expr": expr,
        "agg": agg,
        "server_label": server_label,
        "scale_setting": declared,
        "resolution": RESOLUTION,
    }
    entry = manifest.get(resource)
    valid = isinstance(entry, dict) and entry.get("setting") == setting and path.exists()
    if valid:
        have_first, have_last = (
            date.fromisoformat(entry["first_day"]),
            date.fromisoformat(entry["last_day"]),
        )
        valid = have_first <= last and have_last >= first
    before = after = kept = None
    if valid:
        if first < have_first:
            before = (first, have_first - timedelta(days=1))
        if last > have_last:
            after = (have_last + timedelta(days=1), last)
        if before is None and after is None and (have_first, have_last) == (first, last):
            say(f"{resource}: cache up to date ({first}..{last}, {entry.get('rows')} rows)")
            return None
        try:
            kept = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            say(f"{path}: unreadable ({_one_line(e, 200)}); fetching {resource} again")
            valid = False
    if valid:
        kept = kept[kept["timestamp"].between(pd.Timestamp(first), pd.Timestamp(last))]
        scale, why, new_last = entry["scale"], "new days", min(have_last, last)
    else:
        why = (
            "first fetch"
            if not isinstance(entry, dict)
            else "query settings changed"
            if entry.get("setting") != setting
            else "cache out of range or unreadable"
        )
        kept, scale, before, after, new_last = None, declared, (first, last), None, last
    fetched, asked, series, requests_made, trailing = [], [], 0, 0, None
    for span in (before, after):
        if span is None:
            continue
        raw, info = _fetch_resource(
            client, resource, expr, agg, server_label, *span, max_points, empty_ok=valid
        )
        requests_made += info["requests"]
        series = max(series, info["series"])
        asked.append(span)
        fetched.append(raw)
        if span[1] == last:
            newest_day = pd.Timestamp(raw["timestamp"].max()).date() if len(raw) else None
            trailing = _Newest(span, info["series"], info["query"], newest_day)
    raw = (
        pd.concat(fetched, ignore_index=True) if fetched else _empty_raw()
    )  # nothing new: only trimmed
    if scale is None:
        scale = _scale_of(raw, None)
        if scale != 1:
            say(
                f"{resource}: no scale in the query file and no value above 1: read as ratios 0–1 (×100); "
                f"set scale: 1 or 100 in the query file to decide"
            )
    new = _as_contract(raw, resource, scale)
    data = pd.concat(
        [f for f in (kept, new) if f is not None and len(f)] or [_empty()], ignore_index=True
    )
    data = data.drop_duplicates(["server_id", "timestamp"], keep="last")
    data = data.sort_values(["server_id", "timestamp"], ignore_index=True)[COLUMNS]
    if trailing is not None:
        # days some reporting server has no data for yet (late data, an outage) are asked again next
        # time: judged on the cache as it now is, so a server missing from a one-day span counts too
        new_last = complete_until(data, first)
        if new_last < last:
            say(
                f"{resource}: no data yet for every server for {new_last + timedelta(days=1)}..{last}; "
                "will ask again on the next sync"
            )
    _write_atomic(path, lambda p: data.to_parquet(p, index=False))
    manifest[resource] = {
        "setting": setting,
        "first_day": first.isoformat(),
        "last_day": new_last.isoformat(),
        "scale": scale,
        "rows": int(len(data)),
        "series": int(data["server_id"].nunique()),
        "synced_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_manifest(cache, manifest)
    days = sum((hi - lo).days + 1 for lo, hi in asked)
    say(
        f"{resource}: {why}: fetched {days} day(s) ({', '.join(f'{lo}..{hi}' for lo, hi in asked) or 'none'}), "
        f"{series} series, {len(new)} rows, {requests_made} request(s), {time.monotonic() - began:.1f} s; "
        f"cache {first}..{new_last}, {len(data)} rows"
    )
    return trailing
