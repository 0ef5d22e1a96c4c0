"""What each dashboard view reads, as small SQL aggregations with bound parameters.

Every read goes through ``queries.query_many``: a short shared lock and a fresh read-only connection,
so a pipeline run waiting to write is delayed by one query at most and no connection outlives a
rerun. ``db`` is a ``store.db.Database`` that carries CAPACITY_DASHBOARD_LOCK_TIMEOUT, how long a
view waits before ``last_good`` shows its last data; as a ``str`` it keys the caches by path alone.
Results are cached on the file's *version* (size and mtime of the database and its WAL), so reruns
and other viewers reuse them until a run commits something, and a 2,000-server fleet costs one
query per view, not one table load. User-supplied values (server ids, departments, managers) are
always parameters: ids from a CMDB can contain quotes, unicode or SQL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from capacity_assets.forecasting.engines.registry import TOURNAMENT
from capacity_assets.schema import RESOURCES, RISK_EXCEPTIONS_STORED
from capacity_assets.store import ledger, queries
from capacity_assets.store.db import Database, lock_timeout
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


def version(db: str) -> tuple | None:
    """Changes whenever a run commits; None while there is no database file at all."""
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


def _many(db: Database, statements: dict[str, tuple[str, list]]) -> dict[str, pd.DataFrame]:
    return queries.query_many(db, statements, timeout=lock_timeout(db))


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
    out = _many(
        db, {"t": ("select table_name from duckdb_tables() where schema_name = 'main'", [])}
    )
    return set(out["t"]["table_name"])


@st.cache_data(show_spinner=False, max_entries=16)
def columns(db: str, ver, table: str) -> frozenset[str]:
    """A table's column names: a database from before a column was added still opens."""
    out = _many(
        db,
        {
            "c": (
                "select column_name from duckdb_columns() where schema_name = 'main' and table_name = ?",
                [table],
            )
        },
    )
    return frozenset(out["c"]["column_name"])


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
        # the start most series share: a few servers whose metrics stop early start sooner
        "f": (
            "with s as (select min(ds) s from forecasts group by server_id, resource) "
            "select (select max(generated_at) from forecasts) g, mode(s) s, "
            "(select max(ds) from forecasts) e from s",
            [],
        ),
        "c": ("select count(*) series, count(distinct batch) batches from champions", []),
        # every server of the fleet: forecast, or only skipped (too short, no recent data)
        "n": (
            "select count(distinct server_id) n from (select server_id from champions"
            + (" union all select server_id from skipped_series" if has_skipped else "")
            + ")",
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
            "select batch, published_at from batch_ledger order by published_at, batch limit 1",
            [],
        )
        stmts["b"] = (
            "select count(*) n from batch_ledger",
            [],
        )  # published batches, empty ones too
    else:  # a database from before the ledger: the oldest batch's newest forecast
        stmts["l"] = (
            "select batch, max(generated_at) published_at from forecasts group by batch "
            "order by published_at, batch limit 1",
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
                f"where {where} group by all order by department, resource",
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
                f"select distinct app_manager from risk_exceptions where {where} "
                f"order by app_manager",
                params,
            )
        },
    )["m"]
    return [str(v) for v in out["app_manager"].dropna()]


@st.cache_data(show_spinner=False, max_entries=64)
def risk_list(db: str, ver, severity: str, department: str, manager: str) -> pd.DataFrame:
    """The exception list as planners act on it: most urgent first."""
    where, params = _filters(severity, department, manager)
    return _many(
        db,
        {
            "l": (
                f"select * exclude (batch) from risk_exceptions where {where} "
                f"order by severity = 'critical' desc, days_to_breach, peak_upper desc, "
                f"server_id, resource",
                params,
            )
        },
    )["l"]


@st.cache_data(show_spinner=False, max_entries=16)
def most_urgent_server(db: str, ver) -> str | None:
    out = _many(
        db,
        {
            "u": (
                "select server_id from risk_exceptions order by severity = 'critical' desc, "
                "days_to_breach, peak_upper desc, server_id limit 1",
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
                "group by all order by resource, champion",
                [],
            ),
            "dep": (
                f"select {dept} department, c.champion, count(*)::int wins from champions c {join} "
                f"where c.champion is not null group by all order by 1, 2",
                [],
            ),
            "bins": (
                "select floor(least(champion_mape, ?) / ?) * ? as bin, count(*)::int series from champions "
                "where champion_mape is not null group by all order by bin",
                [bin_cap, bin_width, bin_width],
            ),
            "bad": (
                f"select c.server_id, c.resource, c.champion, c.champion_mape, c.trust{owner} "
                f"from champions c {join} where c.champion_mape > ? "
                f"order by c.champion_mape desc, c.server_id, c.resource limit {BAD_MAPE_LIMIT}",
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
                f"with s as (select distinct server_id from (select server_id from champions{skipped}) "
                "where contains(lower(server_id), lower(?))), "
                "r as (select server_id, min(case severity when 'critical' then 0 else 1 end) sev, "
                "min(days_to_breach) d from risk_exceptions group by all) "
                f"select s.server_id from s left join r using (server_id) "
                f"order by r.sev nulls last, r.d nulls last, s.server_id limit {SERVER_LIST_LIMIT}",
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
    """One server's rows from each table, under one lock so they belong to the same run."""
    p = [server_id]
    stmts = {
        # every column: a database from before demand/demand_upper has the others (filled in below)
        "forecast": (
            "select * exclude (batch) from forecasts where server_id = ? order by resource, ds",
            p,
        ),
        "risk": ("select * exclude (batch) from risk_exceptions where server_id = ?", p),
        "champions": ("select * exclude (batch) from champions where server_id = ?", p),
    }
    if "processed_data" in present:
        stmts["history"] = (
            "select resource, ds, y, filled from processed_data where server_id = ? and ds > "
            f"(select max(ds) from processed_data where server_id = ?) - interval {HISTORY_DAYS} day "
            "order by resource, ds",
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
            " union all ".join(parts) + " order by contender, resource, ds",
            p * len(parts),
        )
    if "business_hierarchy" in present:
        stmts["owner"] = ("select * from business_hierarchy where server_id = ? limit 1", p)
    if "skipped_series" in present:
        stmts["skipped"] = (
            "select resource, days, reason from skipped_series where server_id = ?",
            p,
        )
    if "capacity_plan" in present:
        stmts["plan"] = ("select * exclude (batch) from capacity_plan where server_id = ?", p)
    out = _many(db, stmts)
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
                "from capacity_plan where action in ('add', 'reclaim') group by all order by department, resource, action",
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
                + " order by action, needed_by nulls last, change_pct desc, server_id, resource",
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
# measured day in their window only; `final` when every one of them is
_CALL_SCORES = (
    "with g as (select {by}, count(*)::int series, count(*) filter (where flagged and crossed)::int tp, "
    "count(*) filter (where flagged and not crossed)::int fp, count(*) filter (where not flagged and crossed)::int fn, "
    "bool_and(status = ?) final from risk_calls where days_measured > 0 {where} group by all) "
    'select *, tp / nullif(tp + fp, 0) as "precision", tp / nullif(tp + fn, 0) as recall from g order by {order}'
)


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
            "order by vintage, coalesce(list_position(?::varchar[], horizon_bucket), 99), horizon_bucket",
            [list(HORIZON_BUCKETS)],
        )
    if "risk_calls" in present:
        stmts["calls"] = (_CALL_SCORES.format(by="vintage", where="", order="vintage"), [FINAL])
    if has_status:
        stmts["status"] = ("select status, count(*)::int n from risk_exceptions group by all", [])
    if "risk_resolved" in present:
        stmts["resolved"] = (
            "select coalesce(reason, 'unknown') reason, count(*)::int series from risk_resolved "
            "group by all order by series desc, reason",
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
    a series counts once per vintage that scored it)."""
    return _many(
        db,
        {
            "d": (
                _CALL_SCORES.format(
                    by="department",
                    where="and (?::date is null or vintage = ?::date)",
                    order="department",
                ),
                [FINAL, vintage, vintage],
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
            "order by status = 'new' desc, severity = 'critical' desc, days_to_breach, server_id, resource "
            f"limit {CHANGES_LIMIT}",
            [],
        )
    if has_resolved:
        stmts["r"] = (
            "select server_id, resource, department, app_manager, last_flagged, resolved_in, "
            "coalesce(reason, 'unknown') reason from risk_resolved "
            f"order by department, server_id, resource limit {CHANGES_LIMIT}",
            [],
        )
    out = _many(db, stmts) if stmts else {}
    return Changes(
        out.get("e", pd.DataFrame(columns=["change", "server_id", "resource"])),
        out.get("r", pd.DataFrame(columns=["server_id", "resource", "reason"])),
    )
