"""What each dashboard view reads, as small SQL aggregations with bound parameters.

Every read goes through ``_reading`` (``store.db.reading``): DuckDB, a short shared lock and a fresh
read-only connection, so a pipeline run waiting to write is delayed by one query at most and no
connection outlives a rerun; PostgreSQL, one read-only snapshot. ``db`` is a ``store.db.Database``
that carries CAPACITY_DASHBOARD_LOCK_TIMEOUT, how long a view waits before ``last_good`` shows its
last data; as a ``str`` (a PostgreSQL URL without its password) it keys the caches. Results are
cached on the store's *version* (``version``), so reruns and other viewers reuse them until a run
commits something, and a 2,000-server fleet costs one query per view, not one table load.
User-supplied values (server ids, departments, managers) are always parameters: ids from a CMDB can
contain quotes, unicode or SQL.

The SQL is the subset DuckDB and PostgreSQL share, so both stores show the same numbers: explicit
GROUP BY columns, aliased subqueries, DESC with NULLS LAST spelled out (PostgreSQL puts NULLs first),
floats divided as floats, and text ordered by ``_C`` (byte order, whatever a PostgreSQL database's
locale). ``median``, ``any_value`` and ``isnan`` are PostgreSQL functions ``store.postgres.prepare``
creates.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from capacity_assets.forecasting.engines.registry import TOURNAMENT
from capacity_assets.schema import RESOURCES, RISK_EXCEPTIONS_STORED
from capacity_assets.store import ledger
from capacity_assets.store.db import (
    Database,
    StorageError,
    is_postgres,
    lock_timeout,
    reading,
    table_names,
)
from capacity_assets.store.db import columns as table_columns
from capacity_assets.track.contracts import HORIZON_BUCKETS
from capacity_assets.track.risk_calls import FINAL

RISK_COLUMNS = tuple(RISK_EXCEPTIONS_STORED)

# tables without which there is nothing to show; the others degrade gracefully
REQUIRED = ("champions", "forecasts", "risk_exceptions")
FRESH_DAYS = ledger.STALE_AFTER_DAYS  # the weekly schedule plus a day, as the freshness check
HISTORY_DAYS = 365
SERVER_LIST_LIMIT = 500
BAD_MAPE_LIMIT = 1000
CHANGES_LIMIT = 1000  # rows of each 'what changed' list
ALL = "All"
# ORDER BY text in byte order: DuckDB's own, and PostgreSQL's whatever the database's locale (an
# en_US database would sort 'ann' before 'Payments' and change which rows a LIMIT keeps)
_C = ' collate "C"'


def version(db: str) -> tuple | None:
    """Changes whenever a run commits; None while there is nothing to read at all (no DuckDB file,
    or a PostgreSQL database no batch was ever published to)."""
    if is_postgres(db):
        return _pg_version(db)
    try:
        st_db = os.stat(db)
    except FileNotFoundError:
        return None
    try:
        st_wal = os.stat(db + ".wal")
        wal = (st_wal.st_size, st_wal.st_mtime_ns)
    except FileNotFoundError:
        wal = None
    return (st_db.st_size, st_db.st_mtime_ns, wal)


def _pg_version(db: Database) -> tuple | None:
    """PostgreSQL has no file to stat: the ledger changes whenever a batch is published (its newest
    published_at, and its row count for a batch dropped) and the hierarchy, replaced whole (drop and
    create), gets a new table oid each time. A writer replacing the ledger's columns holds it longer
    than a view waits: then a version never seen before, so the views ask and show their last data."""
    try:
        with _reading(db) as conn:
            if "batch_ledger" not in table_names(conn, "main"):
                return None
            return tuple(
                conn.execute(
                    "select (select max(published_at) from main.batch_ledger), "
                    "(select count(*) from main.batch_ledger), "
                    "to_regclass('main.business_hierarchy')::oid::bigint"
                ).fetchone()
            )
    except StorageError as e:
        if "lock timeout" not in str(e):
            raise
        return ("busy", time.time_ns())


@contextmanager
def _reading(db: Database):
    """``reading(db)`` waiting at most as long as a view may (``lock_timeout(db)``). DuckDB waits for
    the file's shared lock; a PostgreSQL snapshot never waits for a writer's rows, only for a table a
    writer is replacing or altering: ``lock_timeout`` bounds that too, and its error ('canceling
    statement due to lock timeout') is a lock error, so ``last_good`` shows the last data."""
    with reading(db, lock_timeout(db)) as conn:
        if is_postgres(db):
            conn.execute(f"set local lock_timeout = {max(int(lock_timeout(db) * 1000), 1)}")
        yield conn


def _many(db: Database, statements: dict[str, tuple[str, list]]) -> dict[str, pd.DataFrame]:
    """Several queries on one connection, so a view's numbers come from the same pipeline state."""
    with _reading(db) as conn:
        return {
            name: conn.execute(sql, params or []).fetchdf()
            for name, (sql, params) in statements.items()
        }


def _without_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's rows without its partition column (DuckDB's ``exclude`` has no PostgreSQL twin)."""
    return frame.drop(columns=["batch"], errors="ignore")


def _filters(
    severity: str, department: str | None = None, manager: str | None = None
) -> tuple[str, list]:
    """A WHERE clause for the risk filters; 'All' means no filter, values are bound, never spliced."""
    sql, params = ["true"], []
    if severity != ALL.lower() and severity != ALL:
        sql.append("severity = ?")
        params.append(severity)
    if department not in (None, ALL):
        sql.append("department = ?")
        params.append(department)
    if manager not in (None, ALL):
        sql.append("app_manager = ?")
        params.append(manager)
    return " and ".join(sql), params


# ---------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def tables(db: str, ver) -> set[str]:
    with _reading(db) as conn:
        return set(table_names(conn, "main"))


@st.cache_data(show_spinner=False, max_entries=16)
def columns(db: str, ver, table: str) -> frozenset[str]:
    """A table's column names: a database from before a column was added still opens."""
    with _reading(db) as conn:
        return frozenset(name for name, _ in table_columns(conn, "main", table))


@dataclass(frozen=True)
class Overview:
    generated_at: pd.Timestamp | None
    forecast_start: pd.Timestamp | None
    forecast_end: pd.Timestamp | None
    servers: int
    series: int
    batches: int
    skipped: int
    critical: int
    warning: int
    servers_at_risk: int
    oldest_batch: str | None = None  # the batch published longest ago, and when
    oldest_at: pd.Timestamp | None = None
    vintages: int = (
        0  # weekly forecasts kept in forecast_history (0: a database from before the track record)
    )

    def age_days(self, now: pd.Timestamp | None = None) -> float | None:
        """Age of the OLDEST batch: one refreshed batch must not make weeks-old ones look fresh."""
        at = self.oldest_at if self.oldest_at is not None else self.generated_at
        if at is None:
            return None
        now = now or pd.Timestamp.now(tz="UTC").tz_localize(None)  # stored naive UTC
        return (now - at) / pd.Timedelta(days=1)

    def fresh(self, now: pd.Timestamp | None = None) -> bool:
        age = self.age_days(now)
        return age is not None and age <= FRESH_DAYS


@st.cache_data(show_spinner=False, max_entries=16)
def overview(
    db: str, ver, has_skipped: bool, has_ledger: bool = False, has_history: bool = False
) -> Overview:
    stmts = {
        # the start most series share: a few servers whose metrics stop early start sooner (a tie:
        # the later; DuckDB's mode() broke it arbitrarily and PostgreSQL has no such aggregate)
        "f": (
            "with starts as (select min(ds) first_ds from forecasts group by server_id, resource) "
            "select (select max(generated_at) from forecasts) g, "
            "(select first_ds from starts group by first_ds order by count(*) desc, first_ds desc "
            "limit 1) s, (select max(ds) from forecasts) e",
            [],
        ),
        "c": ("select count(*) series, count(distinct batch) batches from champions", []),
        # every server of the fleet: forecast, or only skipped (too short, no recent data)
        "n": (
            "select count(distinct server_id) n from (select server_id from champions"
            + (" union all select server_id from skipped_series" if has_skipped else "")
            + ") ids",
            [],
        ),
        "r": (
            "select count(*) filter (where severity = 'critical') critical, "
            "count(*) filter (where severity = 'warning') warning, count(distinct server_id) servers "
            "from risk_exceptions",
            [],
        ),
    }
    if has_skipped:
        stmts["s"] = ("select count(*) n from skipped_series", [])
    if has_ledger:
        stmts["l"] = (
            f"select batch, published_at from batch_ledger order by published_at, batch{_C} "
            "limit 1",
            [],
        )
        stmts["b"] = (
            "select count(*) n from batch_ledger",
            [],
        )  # published batches, empty ones too
    else:  # a database from before the ledger: the oldest batch's newest forecast
        stmts["l"] = (
            "select batch, max(generated_at) published_at from forecasts group by batch "
            f"order by published_at, batch{_C} limit 1",
            [],
        )
    if has_history:
        stmts["v"] = ("select count(distinct vintage) n from forecast_history", [])
    out = _many(db, stmts)
    f, c, r = out["f"].iloc[0], out["c"].iloc[0], out["r"].iloc[0]

    def ts(v):
        return None if pd.isna(v) else pd.Timestamp(v)

    oldest = out["l"].iloc[0] if len(out["l"]) else None
    return Overview(
        ts(f["g"]),
        ts(f["s"]),
        ts(f["e"]),
        int(out["n"].iloc[0]["n"]),
        int(c["series"]),
        int(out["b"].iloc[0]["n"]) if has_ledger else int(c["batches"]),
        int(out["s"].iloc[0]["n"]) if has_skipped else 0,
        int(r["critical"]),
        int(r["warning"]),
        int(r["servers"]),
        None if oldest is None else str(oldest["batch"]),
        None if oldest is None else ts(oldest["published_at"]),
        int(out["v"].iloc[0]["n"]) if has_history else 0,
    )


@st.cache_data(show_spinner=False, max_entries=16)
def run_settings(db: str, ver) -> dict:
    """The result settings the published batches were made with (batch_ledger), not the viewer's."""
    return ledger.run_settings(_many(db, {"l": ("select settings from batch_ledger", [])})["l"])


# --- risk -------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def risk_heatmap(db: str, ver, severity: str) -> pd.DataFrame:
    """Series at risk per department x resource (long form: department, resource, series)."""
    where, params = _filters(severity)
    return _many(
        db,
        {
            "h": (
                f"select department, resource, count(*)::int series from risk_exceptions "
                f"where {where} group by department, resource "
                f"order by department{_C}, resource{_C}",
                params,
            )
        },
    )["h"]


@st.cache_data(show_spinner=False, max_entries=64)
def risk_managers(db: str, ver, severity: str, department: str) -> list[str]:
    where, params = _filters(severity, department)
    out = _many(
        db,
        {
            "m": (
                f"select app_manager from risk_exceptions where {where} "
                f"group by app_manager order by app_manager{_C}",
                params,
            )
        },
    )["m"]
    return [str(v) for v in out["app_manager"].dropna()]


@st.cache_data(show_spinner=False, max_entries=64)
def risk_list(db: str, ver, severity: str, department: str, manager: str) -> pd.DataFrame:
    """The exception list as planners act on it: most urgent first."""
    where, params = _filters(severity, department, manager)
    return _without_batch(
        _many(
            db,
            {
                "l": (
                    f"select * from risk_exceptions where {where} "
                    f"order by severity = 'critical' desc nulls last, days_to_breach, "
                    f"peak_upper desc nulls last, server_id{_C}, resource{_C}",
                    params,
                )
            },
        )["l"]
    )


@st.cache_data(show_spinner=False, max_entries=16)
def most_urgent_server(db: str, ver) -> str | None:
    out = _many(
        db,
        {
            "u": (
                "select server_id from risk_exceptions order by severity = 'critical' desc nulls last, "
                f"days_to_breach, peak_upper desc nulls last, server_id{_C} limit 1",
                [],
            )
        },
    )["u"]
    return None if out.empty else str(out.iloc[0, 0])


# --- tournament -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tournament:
    by_resource: pd.DataFrame  # resource, champion, wins
    by_department: pd.DataFrame  # department, champion, wins
    mape_bins: pd.DataFrame  # bin (lower edge, %), series
    bad_mape: pd.DataFrame  # series above mape_warn, worst first
    bad_total: int
    median_mape: float | None


@st.cache_data(show_spinner=False, max_entries=16)
def tournament(
    db: str,
    ver,
    mape_warn: float,
    has_hierarchy: bool,
    bin_width: float = 2.0,
    bin_cap: float = 100.0,
) -> Tournament:
    """Bins are computed in SQL (a histogram of 8,000 series needs 50 rows, not 8,000)."""
    dept = "coalesce(h.department, 'Unassigned')" if has_hierarchy else "'Unassigned'"
    join = "left join business_hierarchy h using (server_id)" if has_hierarchy else ""
    owner = ", h.department, h.app_manager" if has_hierarchy else ""
    out = _many(
        db,
        {
            "res": (
                "select resource, champion, count(*)::int wins from champions where champion is not null "
                f"group by resource, champion order by resource{_C}, champion{_C}",
                [],
            ),
            # a subquery, so the grouped department is a column even when it is the constant
            "dep": (
                "select department, champion, count(*)::int wins from "
                f"(select {dept} department, c.champion from champions c {join} "
                "where c.champion is not null) d "
                f"group by department, champion order by department{_C}, champion{_C}",
                [],
            ),
            "bins": (
                "select bin, count(*)::int series from (select floor(least(champion_mape, ?) / ?) * ? "
                "as bin from champions where champion_mape is not null) b group by bin order by bin",
                [bin_cap, bin_width, bin_width],
            ),
            "bad": (
                f"select c.server_id, c.resource, c.champion, c.champion_mape, c.trust{owner} "
                f"from champions c {join} where c.champion_mape > ? "
                f"order by c.champion_mape desc nulls last, c.server_id{_C}, c.resource{_C} "
                f"limit {BAD_MAPE_LIMIT}",
                [mape_warn],
            ),
            "n": (
                "select count(*) filter (where champion_mape > ?) bad, median(champion_mape) med from champions",
                [mape_warn],
            ),
        },
    )
    n = out["n"].iloc[0]
    return Tournament(
        out["res"],
        out["dep"],
        out["bins"],
        out["bad"],
        int(n["bad"]),
        None if pd.isna(n["med"]) else float(n["med"]),
    )


# --- deep dive --------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def servers(db: str, ver, search: str, has_skipped: bool = True) -> list[str]:
    """Server ids containing ``search`` (case-insensitive), at-risk ones first: every server of the
    fleet, forecast or only skipped (the deep dive then says why it has no forecast)."""
    skipped = " union all select server_id from skipped_series" if has_skipped else ""
    out = _many(
        db,
        {
            "s": (
                "with s as (select distinct server_id from "
                f"(select server_id from champions{skipped}) ids "
                "where strpos(lower(server_id), lower(?)) > 0), "
                "r as (select server_id, min(case severity when 'critical' then 0 else 1 end) sev, "
                "min(days_to_breach) d from risk_exceptions group by server_id) "
                f"select s.server_id from s left join r using (server_id) "
                f"order by r.sev nulls last, r.d nulls last, s.server_id{_C} "
                f"limit {SERVER_LIST_LIMIT}",
                [search or ""],
            )
        },
    )["s"]
    return [str(v) for v in out["server_id"]]


@dataclass(frozen=True)
class ServerDetail:
    history: pd.DataFrame  # resource, ds, y, filled (last HISTORY_DAYS)
    backtest: pd.DataFrame  # contender, resource, ds, yhat
    forecast: (
        pd.DataFrame
    )  # resource, ds, yhat, yhat_lower, yhat_upper, model, champion, champion_mape, trust
    risk: pd.DataFrame  # risk_exceptions rows of the server
    champions: pd.DataFrame  # champions rows of the server
    owner: dict
    skipped: pd.DataFrame  # skipped_series rows of the server
    plan: pd.DataFrame  # capacity_plan rows of the server


@st.cache_data(show_spinner=False, max_entries=64)
def server_detail(db: str, ver, server_id: str, present: frozenset) -> ServerDetail:
    """One server's rows from each table, under one lock (one snapshot) so they belong to the same
    run; ordered by resource, so both stores give the same frames."""
    p = [server_id]
    by_resource = f"order by resource{_C}"
    stmts = {
        # every column: a database from before demand/demand_upper has the others (filled in below)
        "forecast": (f"select * from forecasts where server_id = ? {by_resource}, ds", p),
        "risk": (f"select * from risk_exceptions where server_id = ? {by_resource}", p),
        "champions": (f"select * from champions where server_id = ? {by_resource}", p),
    }
    if "processed_data" in present:
        stmts["history"] = (
            "select resource, ds, y, filled from processed_data where server_id = ? and ds > "
            f"(select max(ds) from processed_data where server_id = ?) "
            f"- interval '{HISTORY_DAYS} days' {by_resource}, ds",
            p + p,
        )
    # table names come from the contender registry, never from the user
    parts = [
        f"select '{name}' as contender, resource, ds, yhat from main.\"{name}_results\" "
        f"where server_id = ? and split = 'backtest'"
        for name in TOURNAMENT
        if f"{name}_results" in present
    ]
    if parts:
        stmts["backtest"] = (
            # a subquery: PostgreSQL orders a UNION by its output names only, not by expressions
            f"select * from ({' union all '.join(parts)}) b "
            f"order by contender{_C}, resource{_C}, ds",
            p * len(parts),
        )
    if "business_hierarchy" in present:
        stmts["owner"] = ("select * from business_hierarchy where server_id = ? limit 1", p)
    if "skipped_series" in present:
        stmts["skipped"] = (
            f"select resource, days, reason from skipped_series where server_id = ? {by_resource}",
            p,
        )
    if "capacity_plan" in present:
        stmts["plan"] = (f"select * from capacity_plan where server_id = ? {by_resource}", p)
    out = _many(db, stmts)
    for name in ("forecast", "risk", "champions", "plan"):
        if name in out:
            out[name] = _without_batch(out[name])
    empty = pd.DataFrame()
    owner = out.get("owner", empty)
    for column in ("demand", "demand_upper"):  # a database from before the capacity plan
        if column not in out["forecast"].columns:
            out["forecast"][column] = float("nan")
    return ServerDetail(
        history=out.get("history", pd.DataFrame(columns=["resource", "ds", "y", "filled"])),
        backtest=out.get("backtest", pd.DataFrame(columns=["contender", "resource", "ds", "yhat"])),
        forecast=out["forecast"],
        risk=out["risk"],
        champions=out["champions"],
        owner={} if owner.empty else {k: v for k, v in owner.iloc[0].items() if k != "server_id"},
        skipped=out.get("skipped", pd.DataFrame(columns=["resource", "days", "reason"])),
        plan=out.get("plan", pd.DataFrame(columns=["resource", "action"])),
    )


# --- capacity plan --------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def plan_totals(db: str, ver) -> pd.DataFrame:
    """Per department, resource and action: series, and the change in units where sizes are known."""
    return _many(
        db,
        {
            "t": (
                "select department, resource, action, count(*)::int series, "
                "sum(change_units) filter (where change_units is not null) units, any_value(unit) unit, "
                "count(*) filter (where change_units is null)::int series_in_percent_only "
                "from capacity_plan where action in ('add', 'reclaim') "
                "group by department, resource, action "
                f"order by department{_C}, resource{_C}, action{_C}",
                [],
            )
        },
    )["t"]


@st.cache_data(show_spinner=False, max_entries=64)
def plan_list(db: str, ver, department: str, action: str) -> pd.DataFrame:
    """The plan's rows to act on, the most urgent purchase first."""
    where, params = ["action in ('add', 'reclaim')"], []
    if department != ALL:
        where.append("department = ?")
        params.append(department)
    if action != ALL:
        where.append("action = ?")
        params.append(action)
    return _many(
        db,
        {
            "l": (
                "select server_id, resource, department, app_manager, action, needed_by, change_pct, change_units, unit, "
                "peak_demand_upper, threshold, target, trust, review from capacity_plan where "
                + " and ".join(where)
                + f" order by action{_C}, needed_by nulls last, change_pct desc nulls last, "
                f"server_id{_C}, resource{_C}",
                params,
            )
        },
    )["l"]


def resources_of(detail: ServerDetail) -> list[str]:
    """The server's resources in the usual order, whichever tables mention them."""
    seen = (
        set(detail.forecast["resource"])
        | set(detail.history["resource"])
        | set(detail.skipped["resource"])
    )
    return [r for r in RESOURCES if r in seen] + sorted(seen - set(RESOURCES))


# --- track record ---------------------------------------------------------------------------------
CHART_BUCKETS = tuple(
    b for b in HORIZON_BUCKETS if b != "all"
)  # one line each; `all` only in the table
# one risk-call score per group, as track.risk_calls.risk_call_scores defines it: series with a
# measured day in their window only; `final` when every one of them is. Precision and recall divide
# as floats: PostgreSQL's int / int truncates
_CALL_SCORES = (
    "with g as (select {by}, count(*)::int series, count(*) filter (where flagged and crossed)::int tp, "
    "count(*) filter (where flagged and not crossed)::int fp, count(*) filter (where not flagged and crossed)::int fn, "
    "bool_and(status = ?) final from risk_calls where days_measured > 0 {where} group by {by}) "
    'select *, cast(tp as double precision) / nullif(tp + fp, 0) as "precision", '
    "cast(tp as double precision) / nullif(tp + fn, 0) as recall from g order by {order}"
)


def _bucket_order(column: str) -> str:
    """The horizon buckets' position in HORIZON_BUCKETS (99 for any other), one bound parameter each:
    DuckDB's ``list_position`` over a bound list has no PostgreSQL twin."""
    whens = " ".join(f"when ? then {i}" for i in range(1, len(HORIZON_BUCKETS) + 1))
    return f"case {column} {whens} else 99 end"


@dataclass(frozen=True)
class TrackRecord:
    accuracy: (
        pd.DataFrame
    )  # vintage, horizon_bucket, series, days_scored, median_mape, mean_mape, median_wape,
    #                         bias, band_coverage
    calls: pd.DataFrame  # vintage, series, tp, fp, fn, final, precision, recall
    status: dict  # risk_exceptions per lifecycle status ('new', 'ongoing'), {} before the lifecycle
    resolved: pd.DataFrame  # reason, series (risk_resolved)


@st.cache_data(show_spinner=False, max_entries=16)
def track_record(db: str, ver, present: frozenset, has_status: bool) -> TrackRecord:
    """Realised accuracy by vintage and horizon bucket, risk-call scores by vintage and the lifecycle
    counts, aggregated in SQL: 26 vintages of a 2,000-server fleet are a million accuracy rows, the
    view needs a hundred or so.

    Bias and band coverage are pooled over scored days (weighted by days_scored), which equals
    scoring every day of the vintage at once; MAPE and WAPE are per-series figures, so their median
    and mean across series are shown (a few idle series do not dominate the median; a WAPE of NaN,
    every actual 0, is left out)."""
    stmts = {}
    if "forecast_accuracy" in present:
        stmts["acc"] = (
            "select vintage, horizon_bucket, count(*)::int series, sum(days_scored)::int days_scored, "
            "median(mape) median_mape, avg(mape) mean_mape, median(wape) filter (where not isnan(wape)) median_wape, "
            "sum(bias * days_scored) / sum(days_scored) bias, "
            "sum(band_coverage * days_scored) / sum(days_scored) band_coverage "
            "from forecast_accuracy group by vintage, horizon_bucket "
            f"order by vintage, {_bucket_order('horizon_bucket')}, horizon_bucket{_C}",
            list(HORIZON_BUCKETS),
        )
    if "risk_calls" in present:
        stmts["calls"] = (_CALL_SCORES.format(by="vintage", where="", order="vintage"), [FINAL])
    if has_status:
        stmts["status"] = (
            "select status, count(*)::int n from risk_exceptions group by status",
            [],
        )
    if "risk_resolved" in present:
        stmts["resolved"] = (
            "select reason, count(*)::int series from (select coalesce(reason, 'unknown') reason "
            f"from risk_resolved) r group by reason order by series desc, reason{_C}",
            [],
        )
    out = _many(db, stmts) if stmts else {}
    return TrackRecord(
        accuracy=out.get(
            "acc",
            pd.DataFrame(
                columns=[
                    "vintage",
                    "horizon_bucket",
                    "series",
                    "days_scored",
                    "median_mape",
                    "mean_mape",
                    "median_wape",
                    "bias",
                    "band_coverage",
                ]
            ),
        ),
        calls=out.get(
            "calls",
            pd.DataFrame(
                columns=["vintage", "series", "tp", "fp", "fn", "final", "precision", "recall"]
            ),
        ),
        status={str(k): int(v) for k, v in zip(out["status"]["status"], out["status"]["n"])}
        if "status" in out
        else {},
        resolved=out.get("resolved", pd.DataFrame(columns=["reason", "series"])),
    )


@st.cache_data(show_spinner=False, max_entries=64)
def risk_calls_by_department(db: str, ver, vintage: str | None) -> pd.DataFrame:
    """Risk-call scores per department, over one vintage (``YYYY-MM-DD``) or every kept one (None:
    a series counts once per vintage that scored it; no filter, rather than a NULL parameter whose
    type PostgreSQL cannot infer)."""
    where, params = (
        ("", [FINAL]) if vintage is None else ("and vintage = cast(? as date)", [FINAL, vintage])
    )
    return _many(
        db,
        {
            "d": (
                _CALL_SCORES.format(by="department", where=where, order=f"department{_C}"),
                params,
            )
        },
    )["d"]


@dataclass(frozen=True)
class Changes:
    exceptions: pd.DataFrame  # risk_exceptions now, new ones first (change = status)
    resolved: pd.DataFrame  # risk_resolved: flagged by the previous vintage, not any more


@st.cache_data(show_spinner=False, max_entries=16)
def changes(db: str, ver, has_status: bool, has_resolved: bool) -> Changes:
    """What changed since the previous vintage: exceptions new or ongoing (risk_exceptions.status),
    most urgent first within each, and the resolved ones with their reason; at most CHANGES_LIMIT each."""
    stmts = {}
    if has_status:
        stmts["e"] = (
            "select status change, server_id, resource, department, app_manager, severity, "
            "first_breach_date, days_to_breach, first_flagged from risk_exceptions "
            "order by status = 'new' desc nulls last, severity = 'critical' desc nulls last, "
            f"days_to_breach, server_id{_C}, resource{_C} limit {CHANGES_LIMIT}",
            [],
        )
    if has_resolved:
        stmts["r"] = (
            "select server_id, resource, department, app_manager, last_flagged, resolved_in, "
            "coalesce(reason, 'unknown') reason from risk_resolved "
            f"order by department{_C}, server_id{_C}, resource{_C} limit {CHANGES_LIMIT}",
            [],
        )
    out = _many(db, stmts) if stmts else {}
    return Changes(
        out.get("e", pd.DataFrame(columns=["change", "server_id", "resource"])),
        out.get("r", pd.DataFrame(columns=["server_id", "resource", "reason"])),
    )


# --- pools and what if ----------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def pool_outlook(db: str, ver) -> pd.DataFrame:
    """pool_outlook whole (a row per scenario, pool and resource: small), the soonest breach first."""
    return _many(
        db,
        {
            "p": (
                "select * from pool_outlook order by scenario"
                + _C
                + ", first_breach_date nulls last, headroom_units nulls last, pool"
                + _C
                + ", resource"
                + _C,
                [],
            )
        },
    )["p"]


@st.cache_data(show_spinner=False, max_entries=64)
def pool_demand(db: str, ver, pool: str, scenario: str) -> pd.DataFrame:
    """One pool's days under the published record ('') and ``scenario``, every resource."""
    return _many(
        db,
        {
            "d": (
                "select scenario, resource, ds, capacity_units, threshold_units, demand_units, "
                "demand_upper_units from pool_demand where pool = ? and scenario in ('', ?) "
                f"order by scenario{_C}, resource{_C}, ds",
                [pool, scenario],
            )
        },
    )["d"]


@st.cache_data(show_spinner=False, max_entries=16)
def scenario_names(db: str, ver) -> list[str]:
    """The scenarios the published batches were computed under (scenario_plan has every series)."""
    rows = _many(
        db,
        {
            "s": (
                f"select scenario from scenario_plan group by scenario order by scenario{_C}",
                [],
            )
        },
    )["s"]
    return [str(s) for s in rows["scenario"]]


@dataclass(frozen=True)
class Scenario:
    risk: pd.DataFrame  # scenario_risk of the scenario
    baseline_risk: pd.DataFrame  # risk_exceptions
    plan: pd.DataFrame  # per department, resource, unit, action: series and units, both sides


@st.cache_data(show_spinner=False, max_entries=32)
def scenario(db: str, ver, name: str) -> Scenario:
    """A scenario's risk list against the published one, and its plan totals against the
    published plan's, per department in units (series without a size counted apart)."""
    totals = (
        "select department, resource, unit, action, count(*)::int series, "
        "sum(change_units) filter (where change_units is not null) units, "
        "count(*) filter (where change_units is null)::int series_in_percent_only "
        "from {table} where action in ('add', 'reclaim') {where} "
        "group by department, resource, unit, action"
    )
    keys = "server_id, resource, department, first_breach_date, days_to_breach"
    out = _many(
        db,
        {
            "risk": (f"select {keys} from scenario_risk where scenario = ?", [name]),
            "base": (f"select {keys} from risk_exceptions", []),
            "plan": (
                totals.format(table="scenario_plan", where="and scenario = ?"),
                [name],
            ),
            "base_plan": (totals.format(table="capacity_plan", where=""), []),
        },
    )
    keys = ["department", "resource", "unit", "action"]
    plan = out["base_plan"].merge(out["plan"], on=keys, how="outer", suffixes=("_baseline", ""))
    return Scenario(out["risk"], out["base"], plan)
