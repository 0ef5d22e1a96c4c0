"""Reading the user's metrics and hierarchy files, and refusing bad ones with a clear message.

DuckDB scans the CSV/Parquet files and does the heavy work (filtering one batch's servers, parsing,
daily aggregation) so a partition never loads the whole fleet into pandas. File paths and server ids
are always bound as parameters, never spliced into SQL. Every row dropped, mapped, clipped or scaled
is counted in ``IngestStats`` so it can be reported, never silently lost.
"""
from __future__ import annotations

import glob as globlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from capacity_assets.schema import RESOURCES

METRIC_COLUMNS = ("server_id", "resource", "timestamp", "utilization_pct")
HIERARCHY_COLUMNS = ("server_id", "department", "app_manager")
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# besides ISO 8601 (with or without a UTC offset), which DuckDB parses natively
EXTRA_TIME_FORMATS = ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y%m%d", "%Y-%m-%d %H:%M:%S%z"]
AGG_SQL = {"mean": "avg(u)", "max": "max(u)", "p95": "quantile_cont(u, 0.95)"}


class InputError(ValueError):
    """A user's input file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    kind: str  # 'csv' or 'parquet'
    columns: dict[str, str]  # contract name -> column name in the file
    scale: float = 1.0  # 100 for a file given as fractions 0–1


@dataclass
class IngestStats:
    files: int = 0
    rows_in: int = 0
    bad_timestamp: int = 0
    missing_value: int = 0
    non_numeric_value: int = 0
    unknown_resource: int = 0
    unknown_resources: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    clipped: int = 0
    fraction_files: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # first offending row per problem

    def as_metadata(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def resolve(pattern: str, what: str = "CAPACITY_METRICS") -> list[str]:
    """Files matching a path or glob, sorted; an error naming the pattern when none match."""
    if not pattern:
        raise InputError(f"{what} is empty: give a CSV/Parquet file path or a glob")
    if globlib.has_magic(pattern):
        paths = sorted(p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p))
        if not paths:
            raise InputError(f"{what}={pattern!r}: no file matches this pattern")
        return paths
    if os.path.isdir(pattern):
        paths = sorted(str(p) for p in Path(pattern).iterdir()
                       if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES))
        if not paths:
            raise InputError(f"{what}={pattern!r}: the folder has no .csv or .parquet file")
        return paths
    if not os.path.exists(pattern):
        raise InputError(f"{pattern}: file does not exist ({what})")
    return [pattern]


def _kind(path: str) -> str:
    name = path.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    raise InputError(f"{path}: not a CSV or Parquet file (expected a .csv or .parquet name)")


def _relation_sql(kind: str) -> str:
    if kind == "parquet":
        return "read_parquet(?)"
    return "read_csv(?, header = true, all_varchar = true, auto_detect = true)"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def inspect_file(conn, path: str, required=METRIC_COLUMNS) -> SourceFile:
    """Check one file can be read and has the required columns (matched case-insensitively)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
    kind = _kind(path)
    try:
        found = [d[0] for d in conn.execute(f"select * from {_relation_sql(kind)} limit 0", [path]).description]
    except duckdb.Error as e:
        raise InputError(f"{path}: cannot be read as {kind.upper()} ({str(e).splitlines()[0]})") from None
    by_lower = {c.strip().lower(): c for c in found}
    missing = [c for c in required if c not in by_lower]
    if missing:
        hint = ""
        if kind == "csv" and all(c not in by_lower for c in required):
            hint = " — the first line looks like data, not a header row" if _looks_like_data(found) \
                else ""
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}; "
                         f"columns found: {', '.join(found) or '(none)'}{hint}")
    columns = {c: by_lower[c] for c in required}
    for extra, name in by_lower.items():
        columns.setdefault(extra, name)
    return SourceFile(path=path, kind=kind, columns=columns)


def _looks_like_data(names: list[str]) -> bool:
    def numeric(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return s[:4].isdigit()
    return any(numeric(n.strip()) for n in names)


def inspect_metrics(conn, pattern: str) -> list[SourceFile]:
    files = [inspect_file(conn, p) for p in resolve(pattern)]
    return [_with_scale(conn, f) for f in files]


def _with_scale(conn, f: SourceFile) -> SourceFile:
    """Detect a file given as fractions 0–1 rather than percentages.

    A file whose largest value is at most 1.0 while it holds non-network series is read as
    fractions (real CPU/memory/disk never stays below 1 % for a whole export); idle network alone is
    not enough evidence.
    """
    u, r = _quote(f.columns["utilization_pct"]), _quote(f.columns["resource"])
    mx, non_network = conn.execute(
        f"select max(try_cast({u} as double)), count(*) filter (where lower(trim(cast({r} as varchar))) "
        f"in ('cpu', 'memory', 'disk')) from {_relation_sql(f.kind)}", [f.path]).fetchone()
    if mx is not None and 0 < mx <= 1.0 and non_network > 0:
        return SourceFile(f.path, f.kind, f.columns, scale=100.0)
    return f


def distinct_servers(conn, files: list[SourceFile]) -> list[str]:
    parts = [f"select distinct cast({_quote(f.columns['server_id'])} as varchar) as s from {_relation_sql(f.kind)}"
             for f in files]
    sql = " union ".join(parts)
    rows = conn.execute(f"select s from ({sql}) where s is not null order by s", [f.path for f in files]).fetchall()
    return [r[0] for r in rows]


def _raw_sql(files: list[SourceFile]) -> str:
    parts = []
    for i, f in enumerate(files):
        c = {k: _quote(v) for k, v in f.columns.items()}
        parts.append(
            f"select cast({c['server_id']} as varchar) as server_id, "
            f"cast({c['resource']} as varchar) as resource_raw, "
            f"cast({c['timestamp']} as varchar) as ts_raw, "
            f"cast({c['utilization_pct']} as varchar) as u_raw, {f.scale} as scale, {i} as file_no "
            f"from {_relation_sql(f.kind)} "
            f"where cast({c['server_id']} as varchar) in (select server_id from batch_servers)")
    return " union all ".join(parts)


def read_daily(conn, files: list[SourceFile], servers: list[str], daily_agg: str = "mean"
               ) -> tuple[pd.DataFrame, IngestStats]:
    """One value per server, resource and day for ``servers``, and what was done to get it.

    Time stamps with a UTC offset are converted to UTC; naive ones are taken as they are. A day is a
    calendar day of those time stamps. Rows with an unparseable time stamp, a missing or non-numeric
    value or an unknown resource are dropped and counted; duplicate samples (same series and time
    stamp) are averaged; values outside 0–100 are clipped after fraction scaling.
    """
    stats = IngestStats(files=len(files), fraction_files=[f.path for f in files if f.scale != 1.0])
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("create or replace temp table batch_servers (server_id varchar)")
    if servers:
        conn.executemany("insert into batch_servers values (?)", [[s] for s in servers])
    params = [f.path for f in files]
    conn.execute(f"""
        create or replace temp table raw as
        select server_id, resource_raw, lower(trim(resource_raw)) as resource, ts_raw, u_raw, file_no,
               coalesce(try_cast(ts_raw as timestamptz),
                        try_strptime(ts_raw, {EXTRA_TIME_FORMATS!r})::timestamptz) as ts,
               try_cast(u_raw as double) * scale as u
        from ({_raw_sql(files)})""", params)
    (stats.rows_in, stats.bad_timestamp, stats.missing_value, stats.non_numeric_value) = conn.execute("""
        select count(*),
               count(*) filter (where ts is null),
               count(*) filter (where u_raw is null or trim(u_raw) = '' or lower(trim(u_raw)) in ('nan', 'null', 'na', 'n/a')
                                 or (u is not null and isnan(u))),
               count(*) filter (where u is null and not (u_raw is null or trim(u_raw) = ''
                                 or lower(trim(u_raw)) in ('nan', 'null', 'na', 'n/a')))
        from raw""").fetchone()
    unknown = conn.execute(f"""
        select resource_raw, count(*) from raw where resource not in {tuple(RESOURCES)!r} or resource is null
        group by all order by 2 desc""").fetchall()
    stats.unknown_resources = {str(k): int(n) for k, n in unknown}
    stats.unknown_resource = sum(stats.unknown_resources.values())
    for what, cond in [("unparseable timestamp", "ts is null"),
                       ("non-numeric utilization_pct", "u is null and u_raw is not null and trim(u_raw) <> ''"),
                       ("unknown resource", f"resource not in {tuple(RESOURCES)!r}")]:
        row = conn.execute(f"select file_no, server_id, resource_raw, ts_raw, u_raw from raw where {cond} limit 1").fetchone()
        if row:
            stats.examples.append(f"{what}: {files[row[0]].path}: server_id={row[1]!r} resource={row[2]!r} "
                                  f"timestamp={row[3]!r} utilization_pct={row[4]!r}")
    conn.execute(f"""
        create or replace temp table samples as
        select server_id, resource, ts::timestamp as ts, avg(u) as u, count(*) as n
        from raw
        where ts is not null and u is not null and not isnan(u) and resource in {tuple(RESOURCES)!r}
        group by all""")
    stats.duplicates, stats.clipped = conn.execute(
        "select coalesce(sum(n - 1), 0), count(*) filter (where u < 0 or u > 100) from samples").fetchone()
    daily = conn.execute(f"""
        select server_id, resource, cast(date_trunc('day', ts) as date) as ds,
               least(greatest({AGG_SQL[daily_agg]}, 0), 100) as y
        from (select server_id, resource, ts, least(greatest(u, 0), 100) as u from samples)
        group by all order by server_id, resource, ds""").fetchdf()
    for t in ("raw", "samples", "batch_servers"):
        conn.execute(f"drop table if exists {t}")
    daily["ds"] = pd.to_datetime(daily["ds"]).astype("datetime64[ns]")
    return daily, stats


def read_table(conn, path: str, required, what: str) -> pd.DataFrame:
    """A whole small table (the hierarchy) with its required columns renamed to the contract's."""
    paths = resolve(path, what)
    frames = []
    for p in paths:
        f = inspect_file(conn, p, required)
        cols = ", ".join(f"cast({_quote(v)} as varchar) as {_quote(k)}" for k, v in f.columns.items())
        frames.append(conn.execute(f"select {cols} from {_relation_sql(f.kind)}", [p]).fetchdf())
    return pd.concat(frames, ignore_index=True)
