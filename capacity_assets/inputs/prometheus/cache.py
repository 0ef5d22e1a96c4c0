"""The local daily cache: Parquet files the file ingest reads, brought up to date from the server.

A cache rather than a second ingest path: validation, cleaning and counting stay in one place
(``inputs.files``), every batch scans local files instead of querying the server, and after the
first sync the server only answers for the days that are new.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import requests

from capacity_assets.atomic import write_atomic
from capacity_assets.inputs.prometheus.client import _Client, _one_line
from capacity_assets.inputs.prometheus.errors import NoSeriesError
from capacity_assets.inputs.prometheus.fetch import (
    COLUMNS,
    _as_contract,
    _check_args,
    _day,
    _empty,
    _empty_raw,
    _fetch_resource,
    _scale_of,
)
from capacity_assets.inputs.prometheus.queries import DEFAULT_QUERIES, RESOLUTION
from capacity_assets.inputs.prometheus.urls import base_url
from capacity_assets.schema import RESOURCES

CACHE_FORMAT = 1  # bump when the cache's meaning changes: every resource is then refetched
MANIFEST = "manifest.json"
CACHE_GLOB = "daily_*.parquet"
logger = logging.getLogger(__name__)


def last_complete_day(now: datetime | None = None) -> date:
    """Yesterday in UTC: the newest day whose window is over, the usual ``end`` of ``sync``."""
    now = now or datetime.now(timezone.utc)
    return (now.astimezone(timezone.utc) if now.tzinfo else now).date() - timedelta(days=1)


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
    write_atomic(cache / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))


def _say(log_to) -> Callable[[str], None]:
    if log_to is None:
        return logger.info
    if isinstance(log_to, logging.Logger):
        return log_to.info
    return log_to


def _warn(log_to) -> Callable[[str], None]:
    """Like ``_say``, at warning level: a logger's ``warning``, a plain callable's text marked so."""
    if log_to is None:
        return logger.warning
    if isinstance(log_to, logging.Logger):
        return log_to.warning
    return lambda message: log_to(f"WARNING: {message}")


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
    credentials: dict | None = None,
) -> str:
    """Bring the local cache to the ``history_days`` days ending with ``end`` and return the glob of its files.

    ``end`` is the last complete UTC day (normally yesterday). The first call fetches the whole
    window; later calls fetch only the days the cache does not hold, and drop the days that fell
    out of the window. A resource is fetched again from scratch when its expression, declared
    scale, ``agg``, ``server_label`` or the server URL change (``manifest.json`` records them). A
    scale detected on the first fetch is kept for the later days. One Parquet file per resource,
    replaced atomically; concurrent syncs of one folder take turns on a lock file. ``credentials``
    as for ``fetch_daily``.

    A resource the cache holds nothing of, whose query matches no series at all (virtual machines
    whose NICs report no link speed), is left out with a warning that names the query, and asked
    again on the next sync; the other resources go on. Only when every resource is left out does
    the sync stop. A query that had data and stops matching stops it (``_refuse_silent_queries``).
    """
    _check_args(agg, server_label)
    say, warn = _say(log), _warn(log)
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
        for leftover in (".daily_*.tmp", f".{MANIFEST}.*.tmp"):  # a killed sync's (write_atomic)
            for stale in cache.glob(leftover):
                stale.unlink(missing_ok=True)
        manifest = _read_manifest(cache, say)
        for resource in RESOURCES:  # resources no longer queried must not be read by the ingest
            path = cache / f"daily_{resource}.parquet"
            if resource not in queries and (path.exists() or resource in manifest):
                path.unlink(missing_ok=True)
                manifest.pop(resource, None)
                _write_manifest(cache, manifest)
                say(f"{resource}: no longer queried; removed from the cache")
        client = _Client(url, timeout, retries, session, credentials)
        try:
            newest, left_out = {}, []
            for resource, expr in queries.items():
                try:
                    newest[resource] = _sync_resource(
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
                except NoSeriesError as e:
                    if (cache / f"daily_{resource}.parquet").exists():
                        raise  # it had data: a changed query that matches nothing is a mistake
                    left_out.append(e)
            if len(left_out) == len(queries):
                raise left_out[0]  # nothing to forecast: the first query's error says why
            for e in left_out:
                warn(_left_out(e, base, queries))
            _refuse_silent_queries(client, newest)
        finally:
            client.close()
    return str(cache / CACHE_GLOB)


def _left_out(error: NoSeriesError, base: str, queries) -> str:
    """What a first sync says of a resource whose query matches nothing, and the two ways out."""
    r, query = error.resource, _one_line(error.query, 2000)
    source = getattr(queries, "source", None) or str(DEFAULT_QUERIES)
    add = (
        f"point CAPACITY_PROMQL at a query file (a copy of {source}) whose {r} query exists on "
        "this fleet"
        if source == str(DEFAULT_QUERIES)
        else f"give it a query in CAPACITY_PROMQL ({source}) that exists on this fleet"
    )
    return (
        f"{r} left out: its query matches no series at all on {base} ({query}); the run goes on "
        f"without {r}. To forecast {r}, {add}; to stop this warning, give a file without {r}"
    )


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
    write_atomic(path, lambda p: data.to_parquet(p, index=False))
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
