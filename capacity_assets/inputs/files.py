"""Reading the user's metrics and hierarchy files, and refusing bad ones with a clear message.

DuckDB scans the CSV/Parquet files and does the heavy work (filtering one batch's servers, parsing,
daily aggregation) so a partition never loads the whole fleet into pandas. File paths and server ids
are always bound as parameters, never spliced into SQL. Every row dropped, mapped, clipped or scaled
is counted in ``IngestStats`` so it can be reported, never silently lost.
"""

from __future__ import annotations

import difflib
import glob as globlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from capacity_assets.schema import RESOURCES, quote_ident

METRIC_COLUMNS = ("server_id", "resource", "timestamp", "utilization_pct")
HIERARCHY_COLUMNS = ("server_id", "department", "app_manager")
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# besides ISO 8601 (with or without a UTC offset), which DuckDB parses natively
EXTRA_TIME_FORMATS = [
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y%m%d",
    "%Y-%m-%d %H:%M:%S%z",
    # 'date time +02:00', a log's habit
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S.%f %z",
    "%Y-%m-%d %H:%M %z",
    "%Y-%m-%dT%H:%M:%S %z",
    "%Y-%m-%dT%H:%M:%S.%f %z",
]
# a UTC offset ends a time of day ('…14:00:00+02:00', '…14:00 Z'); a date's '-31' is no offset
OFFSET_SQL = "regexp_matches(trim(ts_raw), '[0-9]:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)? ?([Zz]|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$')"
AGG_SQL = {"mean": "avg(u)", "max": "max(u)", "p95": "quantile_cont(u, 0.95)"}
# first bytes of files people export by mistake, so the message says what the file actually is
MAGIC = [
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook (.xlsx): save the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Office file (.xls): save the sheet as CSV"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image"),
    (b"SQLite format 3", "a SQLite database"),
]
MISSING_TOKENS = "('nan', 'null', 'na', 'n/a', 'none', '-')"
# how a raw (text) row becomes a sample; read_daily and the usable-row check share them
TS_SQL = (
    f"coalesce(try_cast(trim(ts_raw) as timestamptz), "
    f"try_strptime(trim(ts_raw), {EXTRA_TIME_FORMATS!r})::timestamptz)"
)
U_SQL = "try_cast(trim(u_raw) as double)"
RESOURCE_SQL = "lower(trim(resource_raw))"
KNOWN_SQL = repr(tuple(RESOURCES))  # the resources a sample may have, as an SQL list


class InputError(ValueError):
    """A user's input file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    kind: str  # 'csv' or 'parquet'
    columns: dict[str, str]  # contract name -> column name in the file
    scale: float = 1.0  # 100 for a file given as fractions 0–1
    rows: int = -1  # data rows (-1: not counted yet)
    no_server_id: int = 0  # rows whose server_id is missing or blank: they belong to no batch


@dataclass
class IngestStats:
    files: int = 0
    rows_in: int = 0
    bad_timestamp: int = 0
    missing_value: int = 0
    non_numeric_value: int = 0
    unknown_resource: int = 0
    unknown_resources: dict[str, int] = field(default_factory=dict)
    resources_mapped: dict[str, int] = field(default_factory=dict)  # e.g. {'CPU': 120} read as cpu
    duplicates: int = 0
    duplicate_conflicts: int = 0  # duplicated samples whose values disagree (averaged)
    clipped: int = 0
    utc_offset_rows: int = 0
    naive_time_rows: int = 0
    max_samples_per_day: int = 0
    fraction_files: list[str] = field(default_factory=list)
    examples: list[str] = field(
        default_factory=list
    )  # first offending row per problem, with what was done


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
        paths = sorted(
            str(p)
            for p in Path(pattern).iterdir()
            if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)
        )
        if not paths:
            raise InputError(f"{what}={pattern!r}: the folder has no .csv or .parquet file")
        return paths
    if not os.path.exists(pattern):
        raise InputError(f"{pattern}: file does not exist ({what})")
    return [pattern]


def _kind(path: str) -> str:
    """'csv' or 'parquet', judged by the content first: a renamed PNG must not reach the CSV sniffer."""
    name = path.lower()
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    for magic, what in MAGIC:
        if head.startswith(magic):
            raise InputError(f"{path}: not a CSV or Parquet file: it is {what}")
    if name.endswith(PARQUET_SUFFIXES):
        raise InputError(
            f"{path}: not a Parquet file (it does not start with the Parquet magic bytes PAR1)"
        )
    if name.endswith((".gz", ".zst")):
        return "csv"
    if b"\0" in head:
        raise InputError(f"{path}: not a CSV or Parquet file: it is binary, not text")
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise InputError(f"{path}: not a CSV or Parquet file (expected a .csv or .parquet name)")


def _relation_sql(kind: str) -> str:
    if kind == "parquet":
        return "read_parquet(?)"
    return "read_csv(?, header = true, all_varchar = true, auto_detect = true)"


def inspect_file(conn, path: str, required=METRIC_COLUMNS) -> SourceFile:
    """Check one file can be read and has the required columns (matched case-insensitively)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
    kind = _kind(path)
    try:
        found = [
            d[0]
            for d in conn.execute(
                f"select * from {_relation_sql(kind)} limit 0", [path]
            ).description
        ]
    except duckdb.Error as e:
        raise _unreadable(path, kind, e) from None
    by_lower = {c.strip().lower(): c for c in found}
    missing = [c for c in required if c not in by_lower]
    if missing:
        hint = ""
        if kind == "csv" and all(c not in by_lower for c in required):
            hint = (
                " — the first line looks like data, not a header row"
                if _looks_like_data(found)
                else ""
            )
        if not hint:
            close = {
                m: difflib.get_close_matches(m, list(by_lower), n=1, cutoff=0.75) for m in missing
            }
            hint = "".join(
                f" — is {by_lower[c[0]]!r} meant to be {m!r}?" for m, c in close.items() if c
            )
        raise InputError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"columns found: {', '.join(found) or '(none)'}{hint}"
        )
    columns = {c: by_lower[c] for c in required}
    for name in found:  # extra columns keep their header as written
        if name.strip().lower() not in required:
            columns.setdefault(name.strip(), name)
    return SourceFile(path=path, kind=kind, columns=columns)


def _unreadable(path: str, kind: str, error: Exception) -> InputError:
    """Why DuckDB could not read a file, said the way its owner can fix it: a CSV saved by a
    spreadsheet in a Windows code page is otherwise 'CSV Error on Line: N', which names no cause."""
    text = str(error)
    if "not utf-8 encoded" in text.lower() or "invalid unicode" in text.lower():
        line = re.search(r"Line: (\d+)", text)
        return InputError(
            f"{path}: is not UTF-8 text (line {line.group(1) if line else '?'}: e.g. a name with an "
            f"accent saved in a Windows code page): save it as 'CSV UTF-8'"
        )
    return InputError(f"{path}: cannot be read as {kind.upper()} ({text.splitlines()[0]})")


def _looks_like_data(names: list[str]) -> bool:
    def numeric(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return s[:4].isdigit()

    return any(numeric(n.strip()) for n in names)


def inspect_metrics(conn, pattern: str) -> list[SourceFile]:
    found = [inspect_file(conn, p) for p in resolve(pattern)]
    files = _with_scales([(f, _value_facts(conn, f)) for f in found])
    if sum(f.rows for f in files) == 0:
        raise InputError(f"{', '.join(f.path for f in files)}: has a header row but no data rows")
    for f in files:
        if f.rows > f.no_server_id:
            check_usable(conn, f)
    return files


@dataclass(frozen=True)
class _Facts:
    largest: float | None  # the largest finite value
    non_network: int  # rows of cpu, memory or disk
    rows: int
    no_server_id: int

    @property
    def fraction_like(self) -> bool:
        return self.largest is not None and 0 < self.largest <= 1.0


def _value_facts(conn, f: SourceFile) -> _Facts:
    u, r, s = (quote_ident(f.columns[c]) for c in ("utilization_pct", "resource", "server_id"))
    try:
        row = conn.execute(
            f"select max(v) filter (where isfinite(v)), count(*) filter (where lower(trim(cast({r} as varchar))) "
            f"in ('cpu', 'memory', 'disk')), count(*), "
            f"count(*) filter (where nullif(trim(cast({s} as varchar)), '') is null) "
            f"from (select *, try_cast(trim(cast({u} as varchar)) as double) as v from {_relation_sql(f.kind)})",
            [f.path],
        ).fetchone()
    except duckdb.Error as e:
        raise _unreadable(f.path, f.kind, e) from None
    return _Facts(row[0], int(row[1]), int(row[2]), int(row[3]))


def _with_scales(inspected: list[tuple[SourceFile, _Facts]]) -> list[SourceFile]:
    """Detect files given as fractions 0–1 rather than percentages.

    A file whose largest value is at most 1.0 while it holds cpu, memory or disk is read as fractions
    (real servers rarely stay below 1 % for a whole export). Idle network alone is not enough evidence,
    unless every file of the input looks like fractions: then it is one export in fractions, and a
    network-only file (a per-resource export) is scaled with the rest.
    """
    valued = [facts for _, facts in inspected if facts.largest is not None and facts.largest > 0]
    all_fractions = (
        bool(valued) and all(x.fraction_like for x in valued) and any(x.non_network for x in valued)
    )
    return [
        SourceFile(
            f.path,
            f.kind,
            f.columns,
            rows=facts.rows,
            no_server_id=facts.no_server_id,
            scale=100.0 if facts.fraction_like and (facts.non_network or all_fractions) else 1.0,
        )
        for f, facts in inspected
    ]


def distinct_servers(conn, files: list[SourceFile]) -> list[str]:
    parts = [
        f"select distinct cast({quote_ident(f.columns['server_id'])} as varchar) as s from {_relation_sql(f.kind)}"
        for f in files
    ]
    sql = " union ".join(parts)
    rows = conn.execute(
        f"select s from ({sql}) where nullif(trim(s), '') is not null order by s",
        [f.path for f in files],
    ).fetchall()
    return [r[0] for r in rows]


def _file_sql(f: SourceFile, i: int = 0) -> str:
    """One file's rows as text columns (server_id, resource_raw, ts_raw, u_raw, scale, file_no)."""
    c = {k: quote_ident(v) for k, v in f.columns.items()}
    return (
        f"select cast({c['server_id']} as varchar) as server_id, "
        f"cast({c['resource']} as varchar) as resource_raw, "
        f"cast({c['timestamp']} as varchar) as ts_raw, "
        f"cast({c['utilization_pct']} as varchar) as u_raw, {float(f.scale)} as scale, {int(i)} as file_no "
        f"from {_relation_sql(f.kind)}"
    )


def _raw_sql(files: list[SourceFile]) -> str:
    return " union all ".join(
        f"select * from ({_file_sql(f, i)}) where server_id in (select server_id from batch_servers)"
        for i, f in enumerate(files)
    )


def check_usable(conn, f: SourceFile) -> None:
    """Refuse a file none of whose rows can become a sample (dates in another format, values with a
    unit, no known resource): read on, it would give every batch of its servers nothing to publish."""
    if conn.execute(
        f"select 1 from ({_file_sql(f)}) where {TS_SQL} is not null and isfinite({U_SQL}) "
        f"and {RESOURCE_SQL} in {KNOWN_SQL} limit 1",
        [f.path],
    ).fetchone():
        return  # a good file stops at its first usable row
    ts_ok, u_ok, r_ok, ts, u, r = conn.execute(
        f"select count(*) filter (where {TS_SQL} is not null), count(*) filter (where isfinite({U_SQL})), "
        f"count(*) filter (where {RESOURCE_SQL} in {KNOWN_SQL}), first(ts_raw), first(u_raw), first(resource_raw) "
        f"from ({_file_sql(f)}) where nullif(trim(server_id), '') is not null",
        [f.path],
    ).fetchone()
    col = f.columns
    if not ts_ok:
        why = (
            f"no value of column {col['timestamp']!r} is a time stamp (e.g. {ts!r}); expected ISO 8601 "
            f"such as 2026-01-31 or 2026-01-31T14:00:00+00:00, or one of {', '.join(EXTRA_TIME_FORMATS)}"
        )
    elif not u_ok:
        why = (
            f"no value of column {col['utilization_pct']!r} is a number (e.g. {u!r}); expected a "
            f"percentage such as 42.5, without a unit"
        )
    elif not r_ok:
        why = (
            f"no value of column {col['resource']!r} is one of {', '.join(RESOURCES)} (e.g. {r!r})"
        )
    else:
        why = "no row has a time stamp, a numeric value and a known resource at once"
    raise InputError(f"{f.path}: none of its {f.rows:,} rows can be used: {why}")


def read_daily(
    conn, files: list[SourceFile], servers: list[str], daily_agg: str = "mean"
) -> tuple[pd.DataFrame, IngestStats]:
    """One value per server, resource and day for ``servers``, and what was done to get it.

    Time stamps with a UTC offset are converted to UTC; naive ones are taken as they are. A day is a
    calendar day of those time stamps. Rows with an unparseable time stamp, a missing or non-numeric
    (or infinite) value or an unknown resource are dropped and counted; duplicate samples (same
    series and time stamp, e.g. overlapping exports or a repeated daylight-saving hour) are
    averaged; values outside 0–100 are clipped after fraction scaling.
    """
    stats = IngestStats(files=len(files))
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("create or replace temp table batch_servers (server_id varchar)")
    if servers:
        conn.executemany("insert into batch_servers values (?)", [[s] for s in servers])
    params = [f.path for f in files]
    known = KNOWN_SQL
    usable = (
        f"ts is not null and isfinite(u) and resource in {known}"  # a row that becomes a sample
    )
    conn.execute(
        f"""
        create or replace temp table raw as
        select server_id, resource_raw, {RESOURCE_SQL} as resource, ts_raw, u_raw, file_no, scale,
               {TS_SQL} as ts,
               {OFFSET_SQL} as has_offset,
               u_raw is null or lower(trim(u_raw)) in ('', {MISSING_TOKENS[1:-1]}) as u_missing,
               {U_SQL} * scale as u
        from ({_raw_sql(files)})""",
        params,
    )
    (
        stats.rows_in,
        stats.bad_timestamp,
        stats.missing_value,
        stats.non_numeric_value,
        stats.utc_offset_rows,
        stats.naive_time_rows,
    ) = conn.execute("""
        select count(*),
               count(*) filter (where ts is null),
               count(*) filter (where u_missing or isnan(u)),
               count(*) filter (where not u_missing and (u is null or isinf(u))),
               count(*) filter (where ts is not null and has_offset),
               count(*) filter (where ts is not null and not has_offset)
        from raw""").fetchone()
    unknown = conn.execute(f"""
        select coalesce(resource_raw, '(missing)'), count(*) from raw
        where resource not in {known} or resource is null group by all order by 2 desc, 1""").fetchall()
    stats.unknown_resources = {str(k): int(n) for k, n in unknown}
    stats.unknown_resource = sum(stats.unknown_resources.values())
    mapped = conn.execute(f"""
        select resource_raw, count(*) from raw where resource in {known} and resource_raw <> resource
        group by all order by 2 desc, 1""").fetchall()
    stats.resources_mapped = {str(k): int(n) for k, n in mapped}
    for what, cond in [
        ("dropped rows, first unparseable timestamp", "ts is null"),
        (
            "dropped rows, first non-numeric utilization_pct",
            "not u_missing and (u is null or isinf(u))",
        ),
        ("dropped rows, first unknown resource", f"resource not in {known} or resource is null"),
    ]:
        _example(conn, stats, files, what, cond)
    used = conn.execute(f"""
        select distinct file_no from raw
        where {usable} and scale <> 1 order by 1""").fetchall()
    stats.fraction_files = [files[i].path for (i,) in used]
    conn.execute(f"""
        create or replace temp table samples as
        select server_id, resource, ts::timestamp as ts, avg(u) as u, count(*) as n,
               count(distinct u) as n_values
        from raw
        where {usable}
        group by all""")
    stats.duplicates, stats.duplicate_conflicts, stats.clipped, stats.max_samples_per_day = (
        conn.execute("""
        select coalesce(sum(n - 1), 0), count(*) filter (where n_values > 1),
               count(*) filter (where u < 0 or u > 100),
               coalesce((select max(k) from (select count(*) as k from samples
                                             group by server_id, resource, date_trunc('day', ts))), 0)
        from samples""").fetchone()
    )
    if stats.clipped:
        _example(
            conn,
            stats,
            files,
            "clipped to 0–100, first value outside it",
            f"{usable} and (u < 0 or u > 100)",
        )
    if stats.duplicates:
        _example(
            conn,
            stats,
            files,
            "averaged duplicate samples, first",
            f"{usable} and (server_id, resource, ts::timestamp) "
            "in (select (server_id, resource, ts) from samples where n > 1 order by all limit 1)",
        )
    daily = conn.execute(f"""
        select server_id, resource, cast(date_trunc('day', ts) as date) as ds,
               least(greatest({AGG_SQL[daily_agg]}, 0), 100) as y
        from (select server_id, resource, ts, least(greatest(u, 0), 100) as u from samples)
        group by all order by server_id, resource, ds""").fetchdf()
    for t in ("raw", "samples", "batch_servers"):
        conn.execute(f"drop table if exists {t}")
    daily["ds"] = pd.to_datetime(daily["ds"]).astype("datetime64[ns]")
    return daily, stats


def _example(conn, stats: IngestStats, files: list[SourceFile], what: str, cond: str) -> None:
    """Log-ready line for the first row of ``raw`` (by file, then time stamp) matching ``cond``."""
    row = conn.execute(
        f"select file_no, server_id, resource_raw, ts_raw, u_raw from raw where {cond} "
        f"order by file_no, ts_raw limit 1"
    ).fetchone()
    if row:
        stats.examples.append(
            f"{what}: {files[row[0]].path}: server_id={row[1]!r} resource={row[2]!r} "
            f"timestamp={row[3]!r} utilization_pct={row[4]!r}"
        )


def read_table(conn, path: str, required, what: str) -> pd.DataFrame:
    """A whole small table (the hierarchy) with its required columns renamed to the contract's."""
    paths = resolve(path, what)
    frames = []
    for p in paths:
        f = inspect_file(conn, p, required)
        cols = ", ".join(
            f"cast({quote_ident(v)} as varchar) as {quote_ident(k)}" for k, v in f.columns.items()
        )
        try:  # the sniffer reads the start of a file only: a bad byte further down fails here
            frames.append(
                conn.execute(f"select {cols} from {_relation_sql(f.kind)}", [p]).fetchdf()
            )
        except duckdb.Error as e:
            raise _unreadable(p, f.kind, e) from None
    return pd.concat(frames, ignore_index=True)
