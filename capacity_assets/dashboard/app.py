"""Executive dashboard: where the fleet runs out of capacity, how far to trust it, and one server in detail.

Run with ``capacity dashboard``. It only reads (``data`` → ``queries``: short shared locks, no
connection kept across reruns) so it can stay open while runs write. When a run holds the database
longer than a view is willing to wait, the view shows the data it loaded last, with a note, instead
of an error. Only the open tab runs its queries (``st.tabs(on_change="rerun")``).
"""

from __future__ import annotations

import dataclasses
import re
import threading

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings, ConfigError
from capacity_assets.dashboard import charts, data
from capacity_assets.schema import RESOURCES, escape_markdown
from capacity_assets.store.db import DatabaseBusy, StorageError

VIEWS = ("Risk heatmap", "Capacity plan", "Track record", "Tournament summary", "Deep dive")
SEVERITIES = ("all", "critical", "warning")
SEVERITY_STYLE = {
    "critical": "color: #b91c1c; font-weight: 600",
    "warning": "color: #b45309; font-weight: 600",
}
CHANGE_STYLE = {"new": "color: #b91c1c; font-weight: 600"}
STATS = {"median_mape": "Median", "mean_mape": "Mean"}
ALL_VINTAGES = "All kept vintages"

st.set_page_config(page_title="Capacity outlook", page_icon="📈", layout="wide")


class NotLoaded(Exception):
    """The database was busy and this view has never been loaded in this session."""


_busy = {"hit": False}  # per script run: after one timeout, don't wait again for every other query


def _is_lock_error(e: Exception) -> bool:
    return isinstance(e, DatabaseBusy) or (isinstance(e, StorageError) and "lock" in str(e).lower())


@st.cache_resource(show_spinner=False)
def _last_good() -> tuple[dict, threading.Lock]:
    """The last value any session loaded, per database, view and arguments: shared by the process, so
    a reload or a new visitor during a long write sees the last data instead of a blank page. Sessions
    run in threads: the lock keeps the eviction from seeing the dict change under it."""
    return {}, threading.Lock()


LAST_GOOD_MAX = 256  # entries kept (the oldest go first): a deep dive per server viewed adds one


def load(name: str, fn, db: str, ver, *args):
    """``fn(db, ver, *args)``, or the last value loaded for ``name``/``args`` while a run holds the
    database (``_last_good``)."""
    last, lock = _last_good()
    key = (db, name, args)
    if not _busy["hit"]:
        try:
            value = fn(db, ver, *args)
            with lock:
                last.pop(key, None)
                last[key] = value
                while len(last) > LAST_GOOD_MAX:
                    last.pop(next(iter(last)), None)
            return value
        except (DatabaseBusy, StorageError) as e:
            if not _is_lock_error(e):
                raise
            _busy["hit"] = True
    with lock:
        if key in last:
            return last[key]
    raise NotLoaded(name)


def _signed(units: float) -> str:
    """A plan total as its steps add up (+16, -9.8, +2.5 with CAPACITY_ROUND_GB=0.5): never rounded to
    whole units, which read -9.8 Gbps on a 10 Gbps link as giving the whole link back."""
    return f"{units:+,.2f}".rstrip("0").rstrip(".")


def refreshing_note() -> None:
    if _busy["hit"]:
        st.info(
            "⏳ The pipeline is refreshing the data; showing the last loaded data. "
            "Reload the page in a minute for the new numbers.",
            icon=None,
        )


def not_loaded_note() -> None:
    st.info(
        "⏳ The pipeline is refreshing the data and this view has not been loaded yet; "
        "it appears as soon as the run releases the database. Reload the page in a minute."
    )


def no_data_page(db: str, detail: str) -> None:
    st.title("Capacity outlook")
    st.info(f"**No forecasts to show yet.** {detail}")
    st.markdown(
        "The dashboard reads the tables the pipeline writes. To produce them:\n\n"
        "* try it on a synthetic fleet (about a minute and a half for 200 servers on 2 cores):\n\n"
        "  ```\n  capacity demo\n  ```\n"
        "* or forecast your own metrics:\n\n"
        "  ```\n  capacity run --metrics 'metrics/*.parquet' --hierarchy hierarchy.csv\n  ```\n\n"
        f"then reload this page. The dashboard reads `{db}` (set `CAPACITY_DB` or "
        "`capacity dashboard --db` to point it elsewhere)."
    )


# --- header -----------------------------------------------------------------------------------------
def header(ov: data.Overview, settings: CapacitySettings, mixed: dict) -> None:
    st.title("Capacity outlook")
    st.caption(
        f"Threshold {settings.threshold:g} % · risk window {settings.risk_days} days · "
        f"MAPE warning {settings.mape_warn:g} % (as the published runs used them) · database {settings.db}"
    )
    if mixed:
        st.warning(
            "Batches were computed with different settings: "
            + "; ".join(
                f"{k} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}"
                for k, vals in mixed.items()
            )
            + ". The next full `capacity run` brings them in line."
        )
    age = ov.age_days()
    cols = st.columns(6)
    cols[0].metric(
        "Forecast generated",
        f"{ov.generated_at:%Y-%m-%d}" if ov.generated_at is not None else "–",
        help=f"newest generated_at: {ov.generated_at}",
    )
    cols[1].metric(
        "Forecast starts",
        f"{ov.forecast_start:%Y-%m-%d}" if ov.forecast_start is not None else "–",
        help=f"first forecast day of most series; horizon until {ov.forecast_end:%Y-%m-%d}"
        if ov.forecast_end is not None
        else None,
    )
    cols[2].metric(
        "Servers",
        f"{ov.servers:,}",
        help="every server of the published batches, forecast or skipped",
    )
    cols[3].metric(
        "Series",
        f"{ov.series:,}",
        help=f"server × resource with a forecast; {ov.skipped:,} skipped (too short, or no recent data)",
    )
    cols[4].metric("Batches", f"{ov.batches:,}")
    cols[5].metric(
        f"At risk ≤ {settings.risk_days} days",
        f"{ov.critical + ov.warning:,} series",
        delta=f"{ov.critical:,} critical",
        delta_color="red" if ov.critical else "off",
        delta_arrow="off",
        help=f"{ov.servers_at_risk:,} servers; upper bound reaches the series' threshold",
    )
    kept = f" · {vintages_kept(ov.vintages)} (see Track record)."
    if age is None:
        st.warning("No forecast date found." + kept)
    elif ov.fresh():
        st.success(
            f"Data is fresh: the oldest batch was published {_ago(age)} (within {data.FRESH_DAYS} days)"
            + kept
        )
    else:
        st.warning(
            f"Data is stale: the oldest batch ({escape_markdown(ov.oldest_batch or '?')}) was published "
            f"{_ago(age)}, more than {data.FRESH_DAYS} days ago. The weekly refresh may have failed for "
            "it; check `capacity ui`" + kept
        )


def _table_height(rows: int, cap: int = 420) -> int:
    """Pixels for a table of ``rows`` rows (a header and at least one row), scrolling beyond ``cap``."""
    return min(cap, 38 + 35 * max(rows, 1))


def vintages_kept(n: int) -> str:
    if n == 0:
        return "no weekly vintage kept yet"
    return f"{n:,} weekly vintage{'s' if n != 1 else ''} kept"


def _ago(days: float) -> str:
    if days < 1:
        return f"{max(days * 24, 0):.0f} h ago"
    return f"{days:.0f} day{'s' if round(days) != 1 else ''} ago"


# --- views ------------------------------------------------------------------------------------------
def open_in_deep_dive(server: str) -> None:
    st.session_state["deep_search"] = ""
    st.session_state["deep_select"] = server
    st.session_state["view"] = "Deep dive"


def _safe_filename(*parts: str) -> str:
    return (
        "_".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-").lower() or "x" for p in parts) + ".csv"
    )


def risk_view(db: str, ver, settings: CapacitySettings) -> None:
    st.subheader("Risk heatmap")
    st.caption(
        f"Series whose forecast upper bound reaches their threshold ({settings.threshold:g} % unless set "
        f"per resource or per server) within {settings.risk_days} days. Critical: the forecast itself gets "
        "there; warning: only the upper bound does."
    )
    severity = st.radio(
        "Severity",
        SEVERITIES,
        horizontal=True,
        key="risk_severity",
        format_func=lambda s: s.capitalize(),
    )
    try:
        counts = load("heatmap", data.risk_heatmap, db, ver, severity)
    except NotLoaded:
        return not_loaded_note()
    which = {"all": "critical and warning", "critical": "critical only", "warning": "warning only"}[
        severity
    ]
    st.plotly_chart(
        charts.risk_heatmap(
            counts, list(RESOURCES), title=f"Series at risk by department and resource ({which})"
        ),
        key="heatmap_chart",
        config={"displayModeBar": False},
    )

    departments = sorted(counts["department"].astype(str).unique())
    c1, c2 = st.columns(2)
    if st.session_state.get("risk_department") not in [data.ALL, *departments]:
        st.session_state["risk_department"] = data.ALL
    department = c1.selectbox("Department", [data.ALL, *departments], key="risk_department")
    try:
        managers = load("managers", data.risk_managers, db, ver, severity, department)
    except NotLoaded:
        return not_loaded_note()
    if st.session_state.get("risk_manager") not in [data.ALL, *managers]:
        st.session_state["risk_manager"] = data.ALL
    manager = c2.selectbox("App manager", [data.ALL, *managers], key="risk_manager")
    try:
        exceptions = load("risk_list", data.risk_list, db, ver, severity, department, manager)
    except NotLoaded:
        return not_loaded_note()

    n_servers = exceptions["server_id"].nunique()
    st.markdown(
        f"**{len(exceptions):,} series on {n_servers:,} server{'' if n_servers == 1 else 's'}** at risk"
        + (f" in {escape_markdown(department)}" if department != data.ALL else "")
        + (f" managed by {escape_markdown(manager)}" if manager != data.ALL else "")
    )
    # colour is a cue, not the information (the word stays); styling thousands of rows costs seconds
    shown = (
        exceptions.style.map(lambda v: SEVERITY_STYLE.get(v, ""), subset=["severity"])
        if len(exceptions) <= 2000
        else exceptions
    )
    extra = {
        c: st.column_config.TextColumn(c.replace("_", " ").capitalize())
        for c in exceptions.columns
        if c not in data.RISK_COLUMNS
    }
    st.dataframe(
        shown,
        hide_index=True,
        key="risk_table",
        height=_table_height(len(exceptions)),
        column_config={
            "server_id": st.column_config.TextColumn("Server"),
            "resource": st.column_config.TextColumn("Resource"),
            "department": st.column_config.TextColumn("Department"),
            "app_manager": st.column_config.TextColumn("App manager"),
            "first_breach_date": st.column_config.DateColumn("First breach", format="YYYY-MM-DD"),
            "days_to_breach": st.column_config.NumberColumn("Days to breach", format="%d"),
            "peak_upper": st.column_config.NumberColumn("Peak upper", format="%.1f %%"),
            "peak_yhat": st.column_config.NumberColumn("Peak forecast", format="%.1f %%"),
            "model": st.column_config.TextColumn("Model"),
            "champion_mape": st.column_config.NumberColumn("MAPE", format="%.1f %%"),
            "trust": st.column_config.TextColumn("Trust"),
            "severity": st.column_config.TextColumn("Severity"),
            "threshold": st.column_config.NumberColumn("Threshold", format="%g %%"),
            "status": st.column_config.TextColumn(
                "Status", help="new: not flagged by the previous weekly run"
            ),
            "first_flagged": st.column_config.DateColumn("Flagged since", format="YYYY-MM-DD"),
            **extra,
        },
    )
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    c3.download_button(
        "Download this list (CSV)",
        data=exceptions.to_csv(index=False).encode("utf-8"),
        file_name=_safe_filename("risk", severity, department, manager),
        mime="text/csv",
        key="risk_csv",
        disabled=exceptions.empty,
    )
    if not exceptions.empty:
        ids = list(dict.fromkeys(exceptions["server_id"].astype(str)))
        target = c1.selectbox("Server to inspect", ids, key="risk_open_select")
        c2.button("Open in Deep dive", key="risk_open", on_click=open_in_deep_dive, args=(target,))


def plan_view(db: str, ver, settings: CapacitySettings, present: set[str]) -> None:
    st.subheader("Capacity plan")
    if "capacity_plan" not in present:
        st.info("No capacity plan yet: the next `capacity run` makes one.")
        return
    st.caption(
        f"What to buy, by when, and what can be taken back. A series needs capacity added when its upper "
        f"bound reaches its threshold within the forecast; the change sizes its peak upper demand to the "
        f"target ({settings.target:g} % unless set per resource or server), ordered "
        f"{settings.lead_days} days ahead. Reclaim: the upper bound stays below {settings.reclaim_below:g} % "
        "and the forecast is trusted. 'Review' marks actions a low-trust forecast drives."
    )
    try:
        totals = load("plan_totals", data.plan_totals, db, ver)
    except NotLoaded:
        return not_loaded_note()
    st.plotly_chart(
        charts.plan_totals_bar(totals, "Series to add and to reclaim by department"),
        key="plan_chart",
        config={"displayModeBar": False},
    )
    if not totals.empty:
        # in the plan's own steps: a Gbps total rounded to whole units read -9.8 on a 10 Gbps link as -10
        shown = totals.assign(
            change=[
                f"{_signed(u)} {unit}" if pd.notna(u) else "–"
                for u, unit in zip(totals["units"], totals["unit"])
            ]
        )
        st.dataframe(
            shown[
                ["department", "resource", "action", "series", "change", "series_in_percent_only"]
            ],
            hide_index=True,
            key="plan_totals_table",
            column_config={
                "series_in_percent_only": st.column_config.NumberColumn(
                    "In % only", help="series whose server size the hierarchy does not give"
                )
            },
        )
    c1, c2 = st.columns(2)
    departments = sorted(totals["department"].astype(str).unique()) if not totals.empty else []
    department = c1.selectbox("Department", [data.ALL, *departments], key="plan_department")
    action = c2.selectbox("Action", [data.ALL, "add", "reclaim"], key="plan_action")
    try:
        rows = load("plan_list", data.plan_list, db, ver, department, action)
    except NotLoaded:
        return not_loaded_note()
    st.markdown(f"**{len(rows):,} actions**, the most urgent purchase first")
    shown = (
        rows.assign(unit=rows["unit"].astype("string").fillna("% only"))
        if "unit" in rows.columns
        else rows
    )
    st.dataframe(
        shown,
        hide_index=True,
        key="plan_table",
        height=_table_height(len(rows)),
        column_config={
            "server_id": st.column_config.TextColumn("Server"),
            "resource": "Resource",
            "department": "Department",
            "app_manager": "App manager",
            "action": "Action",
            "trust": "Trust",
            "unit": "Unit",
            "needed_by": st.column_config.DateColumn("Needed by", format="YYYY-MM-DD"),
            "change_pct": st.column_config.NumberColumn("Change", format="%+.0f %%"),
            "change_units": st.column_config.NumberColumn("Change (units)", format="%+g"),
            "peak_demand_upper": st.column_config.NumberColumn(
                "Peak upper demand", format="%.1f %%"
            ),
            "threshold": st.column_config.NumberColumn("Threshold", format="%g %%"),
            "target": st.column_config.NumberColumn("Target", format="%g %%"),
            "review": st.column_config.CheckboxColumn("Review"),
        },
    )
    st.download_button(
        "Download this plan (CSV)",
        data=rows.to_csv(index=False).encode("utf-8"),
        file_name=_safe_filename("plan", department, action),
        mime="text/csv",
        key="plan_csv",
        disabled=rows.empty,
    )


def track_view(db: str, ver, settings: CapacitySettings, present: set[str], kept: int) -> None:
    """Was the forecast right? Realised accuracy, risk calls that came true, and what changed this week."""
    st.subheader("Track record")
    st.caption(
        "Every weekly run keeps its forecast as a *vintage* (named after its first forecast day); as actuals "
        "arrive, each vintage is scored against what was measured. A vintage is scored only on the days that "
        "have happened, so the newest ones cover the near horizon only."
    )
    try:
        has_status = "status" in load("risk_columns", data.columns, db, ver, "risk_exceptions")
        tr = load("track", data.track_record, db, ver, frozenset(present), has_status)
    except NotLoaded:
        return not_loaded_note()
    if kept < 2 or tr.accuracy.empty:
        before = (
            ""
            if "forecast_history" in present
            else (
                " This database is from before the track record: the next `capacity run` keeps its first vintage."
            )
        )
        st.info(
            f"**Kept vintages: {kept}** — the track record fills as weekly runs accumulate; "
            f"`capacity demo --weeks 8` replays eight weeks.{before}"
        )
    _accuracy_section(tr, settings)
    _risk_calls_section(db, ver, tr, settings)
    _changes_section(db, ver, tr, has_status, "risk_resolved" in present)


def _accuracy_section(tr: data.TrackRecord, settings: CapacitySettings) -> None:
    st.markdown("#### Forecast accuracy, realised")
    if tr.accuracy.empty:
        st.caption("No vintage has actuals after it yet.")
        return
    stat = st.radio(
        "Statistic",
        list(STATS),
        horizontal=True,
        key="track_stat",
        format_func=STATS.get,
        help="of the series' MAPE in each vintage and horizon bucket",
    )
    st.plotly_chart(
        charts.accuracy_by_vintage(
            tr.accuracy,
            stat,
            data.CHART_BUCKETS,
            f"{STATS[stat]} MAPE by vintage and horizon (days ahead)",
        ),
        key="track_accuracy_chart",
        config={"displayModeBar": False},
    )
    shown = tr.accuracy.sort_values("vintage", ascending=False, kind="stable").assign(
        band_coverage=lambda d: d["band_coverage"] * 100
    )
    st.dataframe(
        shown,
        hide_index=True,
        key="track_accuracy_table",
        height=_table_height(len(shown), 400),
        column_config={
            "vintage": st.column_config.DateColumn("Vintage", format="YYYY-MM-DD"),
            "horizon_bucket": st.column_config.TextColumn("Days ahead"),
            "series": st.column_config.NumberColumn("Series", format="%d"),
            "days_scored": st.column_config.NumberColumn("Days scored", format="%d"),
            "median_mape": st.column_config.NumberColumn("Median MAPE", format="%.1f %%"),
            "mean_mape": st.column_config.NumberColumn("Mean MAPE", format="%.1f %%"),
            "median_wape": st.column_config.NumberColumn("Median WAPE", format="%.1f %%"),
            "bias": st.column_config.NumberColumn(
                "Bias",
                format="%+.2f pp",
                help="mean forecast minus actual in percentage points: positive = over-forecast",
            ),
            "band_coverage": st.column_config.NumberColumn(
                "Band coverage",
                format="%.0f %%",
                help=f"share of actuals inside the forecast band, which is {settings.interval:.0%} wide",
            ),
        },
    )


def _risk_calls_section(db: str, ver, tr: data.TrackRecord, settings: CapacitySettings) -> None:
    st.markdown("#### Risk calls: did they come true?")
    st.caption(
        f"A call is right when a measured daily value reached the threshold within its {settings.risk_days}-day "
        "window. Precision: flagged series that crossed; recall: crossing series that were flagged. "
        "*So far* (a hollow marker): the window has not passed yet, a flagged series may still cross."
    )
    if tr.calls.empty:
        st.caption("No risk call has a measured day in its window yet.")
        return
    c1, c2 = st.columns([2, 3])
    with c1:
        st.plotly_chart(
            charts.risk_calls_by_vintage(tr.calls, "Precision and recall by vintage"),
            key="track_calls_chart",
            config={"displayModeBar": False},
        )
    with c2:
        st.dataframe(
            _calls_table(tr.calls),
            hide_index=True,
            key="track_calls_table",
            column_config=CALLS_COLUMNS
            | {"vintage": st.column_config.DateColumn("Vintage", format="YYYY-MM-DD")},
        )
        vintages = [f"{pd.Timestamp(v):%Y-%m-%d}" for v in tr.calls["vintage"]][::-1]
        if st.session_state.get("track_calls_vintage") not in [ALL_VINTAGES, *vintages]:
            st.session_state["track_calls_vintage"] = ALL_VINTAGES
        vintage = st.selectbox(
            "By department, for", [ALL_VINTAGES, *vintages], key="track_calls_vintage"
        )
        try:
            dept = load(
                "track_dept",
                data.risk_calls_by_department,
                db,
                ver,
                None if vintage == ALL_VINTAGES else vintage,
            )
        except NotLoaded:
            return not_loaded_note()
        st.dataframe(
            _calls_table(dept),
            hide_index=True,
            key="track_dept_table",
            column_config=CALLS_COLUMNS | {"department": st.column_config.TextColumn("Department")},
        )


def _changes_section(
    db: str, ver, tr: data.TrackRecord, has_status: bool, has_resolved: bool
) -> None:
    st.markdown("#### What changed since last week")
    if not has_status and not has_resolved:
        st.caption(
            "This database is from before the exception lifecycle: the next `capacity run` adds it."
        )
        return
    n_new, n_ongoing = tr.status.get("new", 0), tr.status.get("ongoing", 0)
    n_resolved = int(tr.resolved["series"].sum())
    cols = st.columns(3)
    cols[0].metric(
        "New exceptions", f"{n_new:,}", help="flagged now, not by the previous weekly run"
    )
    cols[1].metric("Ongoing", f"{n_ongoing:,}", help="flagged by the previous weekly run too")
    cols[2].metric(
        "Resolved", f"{n_resolved:,}", help="flagged by the previous weekly run, not any more"
    )
    if n_resolved:
        st.caption(
            "Resolved because: "
            + ", ".join(
                f"{escape_markdown(r)} {n:,}"
                for r, n in zip(tr.resolved["reason"], tr.resolved["series"])
            )
        )
    try:
        ch = load("track_changes", data.changes, db, ver, has_status, has_resolved)
    except NotLoaded:
        return not_loaded_note()
    if ch.exceptions.empty and ch.resolved.empty:
        st.caption("No exception now and none resolved since the previous weekly run.")
    owner = {
        "server_id": st.column_config.TextColumn("Server"),
        "resource": st.column_config.TextColumn("Resource"),
        "department": st.column_config.TextColumn("Department"),
        "app_manager": st.column_config.TextColumn("App manager"),
    }
    if not ch.exceptions.empty:
        st.markdown(
            "**At risk now**, new ones first" + _more(len(ch.exceptions), n_new + n_ongoing)
        )
        st.dataframe(
            ch.exceptions.style.map(lambda v: CHANGE_STYLE.get(v, ""), subset=["change"]),
            hide_index=True,
            key="track_exceptions_table",
            height=_table_height(len(ch.exceptions)),
            column_config=owner
            | {
                "change": st.column_config.TextColumn("Status"),
                "severity": st.column_config.TextColumn("Severity"),
                "first_breach_date": st.column_config.DateColumn(
                    "First breach", format="YYYY-MM-DD"
                ),
                "days_to_breach": st.column_config.NumberColumn("Days to breach", format="%d"),
                "first_flagged": st.column_config.DateColumn("Flagged since", format="YYYY-MM-DD"),
            },
        )
    if not ch.resolved.empty:
        st.markdown(
            "**Resolved** since the previous weekly run" + _more(len(ch.resolved), n_resolved)
        )
        st.dataframe(
            ch.resolved,
            hide_index=True,
            key="track_resolved_table",
            height=_table_height(len(ch.resolved)),
            column_config=owner
            | {
                "last_flagged": st.column_config.DateColumn("Last flagged", format="YYYY-MM-DD"),
                "resolved_in": st.column_config.DateColumn(
                    "Resolved in", format="YYYY-MM-DD", help="the vintage that no longer flags it"
                ),
                "reason": st.column_config.TextColumn("Reason"),
            },
        )


def _more(shown: int, total: int) -> str:
    return f" (showing {shown:,} of {total:,})" if total > shown else ""


CALLS_COLUMNS = {
    "status": st.column_config.TextColumn("Status", help="final: the risk window has passed"),
    "series": st.column_config.NumberColumn(
        "Scored",
        format="%d",
        help="series with a measured day in their risk "
        "window (over several vintages: once per vintage)",
    ),
    "flagged": st.column_config.NumberColumn("Flagged", format="%d"),
    "crossed": st.column_config.NumberColumn("Crossed", format="%d"),
    "tp": st.column_config.NumberColumn("Right", format="%d", help="flagged and crossed"),
    "fp": st.column_config.NumberColumn("False alarm", format="%d", help="flagged, did not cross"),
    "fn": st.column_config.NumberColumn("Missed", format="%d", help="crossed without a flag"),
    "precision": st.column_config.TextColumn(
        "Precision", help="right / flagged; – when nothing was flagged"
    ),
    "recall": st.column_config.TextColumn("Recall", help="right / crossed; – when nothing crossed"),
}


def _calls_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Risk-call scores as planners read them: counts, then precision/recall in percent ('–' when
    nothing was flagged or crossed), and whether the figure is final."""
    key = scores.columns[0]
    return pd.DataFrame(
        {
            key: scores[key],
            "status": ["final" if f else "so far" for f in scores["final"]],
            "series": scores["series"],
            "flagged": scores["tp"] + scores["fp"],
            "crossed": scores["tp"] + scores["fn"],
            "tp": scores["tp"],
            "fp": scores["fp"],
            "fn": scores["fn"],
            "precision": scores["precision"].map(_share),
            "recall": scores["recall"].map(_share),
        }
    )


def _share(v) -> str:
    return "–" if pd.isna(v) else f"{float(v):.0%}"


def tournament_view(db: str, ver, settings: CapacitySettings, present: set[str]) -> None:
    st.subheader("Tournament summary")
    st.caption(
        "Each series is forecast by every contender; the one with the lowest MAPE on the "
        f"backtest months becomes its champion. Series above {settings.mape_warn:g} % MAPE "
        "are flagged: plan on them with care."
    )
    bin_width = 2.0
    try:
        t = load(
            "tournament",
            data.tournament,
            db,
            ver,
            settings.mape_warn,
            "business_hierarchy" in present,
            bin_width,
        )
    except NotLoaded:
        return not_loaded_note()
    total = int(t.by_resource["wins"].sum())
    cols = st.columns(3)
    cols[0].metric("Series in the tournament", f"{total:,}")
    cols[1].metric(
        "Median champion MAPE", f"{t.median_mape:.1f} %" if t.median_mape is not None else "–"
    )
    cols[2].metric(
        f"Flagged (MAPE > {settings.mape_warn:g} %)",
        f"{t.bad_total:,}",
        delta=f"{t.bad_total / total:.0%} of series" if total else None,
        delta_color="off",
        delta_arrow="off",
    )
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(
            charts.wins_bar(
                t.by_resource,
                "resource",
                "Wins by model per resource",
                order=[r for r in RESOURCES if r in set(t.by_resource["resource"])],
            ),
            key="wins_resource",
            config={"displayModeBar": False},
        )
    with c2:
        st.plotly_chart(
            charts.mape_histogram(t.mape_bins, settings.mape_warn, bin_width),
            key="mape_hist",
            config={"displayModeBar": False},
        )
    st.plotly_chart(
        charts.wins_bar(
            t.by_department, "department", "Wins by model per department", horizontal=True
        ),
        key="wins_department",
        config={"displayModeBar": False},
    )
    st.markdown(
        f"**Series flagged by the bad-MAPE check** (champion MAPE > {settings.mape_warn:g} %): "
        f"{t.bad_total:,}"
        + (f", showing the worst {len(t.bad_mape):,}" if t.bad_total > len(t.bad_mape) else "")
    )
    st.dataframe(
        t.bad_mape,
        hide_index=True,
        key="bad_mape_table",
        height=_table_height(len(t.bad_mape), 400),
        column_config={
            "champion_mape": st.column_config.NumberColumn("Champion MAPE", format="%.1f %%"),
            "server_id": "Server",
            "resource": "Resource",
            "champion": "Champion",
            "trust": "Trust",
            "department": "Department",
            "app_manager": "App manager",
        },
    )


def deep_dive_view(db: str, ver, settings: CapacitySettings, present: set[str]) -> None:
    st.subheader("Deep dive")
    c1, c2 = st.columns([1, 2])
    search = c1.text_input("Search server id", key="deep_search", placeholder="part of a server id")
    try:
        options = load("servers", data.servers, db, ver, search, "skipped_series" in present)
        urgent = load("urgent", data.most_urgent_server, db, ver)
    except NotLoaded:
        return not_loaded_note()
    current = st.session_state.get("deep_select")
    if not search and current and current not in options:
        options = [current, *options]  # opened from the risk list but beyond the list's limit
    if not options:
        c2.selectbox("Server", ["(no server matches)"], disabled=True, key="deep_none")
        return
    if current not in options:
        st.session_state["deep_select"] = urgent if urgent in options else options[0]
    server = c2.selectbox("Server (at-risk servers first)", options, key="deep_select")
    try:
        detail = load("server", data.server_detail, db, ver, server, frozenset(present))
    except NotLoaded:
        return not_loaded_note()

    owner = ", ".join(
        f"{escape_markdown(k.replace('_', ' '))}: **{escape_markdown(v)}**"
        for k, v in detail.owner.items()
        if pd.notna(v)
    )
    st.markdown(f"### {escape_markdown(server)}" + (f"\n{owner}" if owner else ""))
    risk = detail.risk.sort_values(["days_to_breach"]) if not detail.risk.empty else detail.risk
    if risk.empty:
        if not detail.forecast.empty:
            st.success(
                f"No resource is forecast to reach its threshold within {settings.risk_days} days."
            )
        elif not detail.skipped.empty:  # nobody watches it: no all-clear
            st.warning(
                "Not forecast: none of this server's series could be forecast (the reason is under each "
                "chart), so nothing is known about its next days."
            )
    else:
        # the series' own threshold (per resource or per server); a database from before has none
        level = lambda r: float(getattr(r, "threshold", float("nan")))  # noqa: E731
        lines = [
            f"**{RES(r.resource)}** reaches {level(r) if pd.notna(level(r)) else settings.threshold:g} % on "
            f"**{pd.Timestamp(r.first_breach_date):%Y-%m-%d}** "
            f"({_days(int(r.days_to_breach))}, {r.severity}; peak upper bound {r.peak_upper:.1f} %)"
            for r in risk.itertuples()
        ]
        (st.error if (risk["severity"] == "critical").any() else st.warning)(
            "At risk: " + "; ".join(lines)
        )
    resources = data.resources_of(detail)
    if not resources:
        st.info("No data for this server.")
        return
    champ = detail.champions.set_index("resource") if not detail.champions.empty else pd.DataFrame()
    plan = detail.plan.set_index("resource") if not detail.plan.empty else pd.DataFrame()
    skipped = detail.skipped.set_index("resource") if not detail.skipped.empty else pd.DataFrame()
    grid = st.columns(2)
    for i, res in enumerate(resources):
        breach = (
            risk[risk["resource"] == res].iloc[0]
            if not risk.empty and (risk["resource"] == res).any()
            else None
        )
        row = champ.loc[res] if res in champ.index else None
        fig = charts.server_resource_chart(
            res,
            detail.history[detail.history["resource"] == res],
            detail.backtest[detail.backtest["resource"] == res],
            detail.forecast[detail.forecast["resource"] == res],
            float(plan.loc[res, "threshold"]) if res in plan.index else settings.threshold,
            breach,
            champion=None if row is None else row["champion"],
            mape=None if row is None else row["champion_mape"],
            trust=None if row is None else row["trust"],
            interval=settings.interval,
            plan=plan.loc[res] if res in plan.index else None,
        )
        with grid[i % 2]:
            st.plotly_chart(fig, key=f"deep_{res}", config={"displayModeBar": False})
            if res in skipped.index:
                st.caption(f"Not forecast: {skipped.loc[res, 'reason']}")


def _days(n: int) -> str:
    return "already there" if n <= 0 else f"in {n} day{'s' if n != 1 else ''}"


def RES(r: str) -> str:  # noqa: N802 - reads as a label in f-strings
    return charts.RESOURCE_LABEL.get(r, r)


# --- page -------------------------------------------------------------------------------------------
SHOWN_SETTINGS = ("threshold", "risk_days", "mape_warn")


def main() -> None:
    try:
        settings = CapacitySettings.from_env()
        data.lock_timeout()
    except ConfigError as e:
        st.error(f"Configuration error: {e}")
        return
    db = settings.db
    ver = data.version(db)
    if ver is None:
        return no_data_page(db, f"There is no database at `{db}` yet.")
    try:
        present = load("tables", data.tables, db, ver)
    except NotLoaded:
        st.title("Capacity outlook")
        return not_loaded_note()
    except StorageError as e:
        return no_data_page(db, str(e))
    missing = [t for t in data.REQUIRED if t not in present]
    if missing:
        return no_data_page(
            db,
            f"`{db}` has no {', '.join(missing)} table yet (a first run may still be in progress).",
        )
    try:
        ov = load(
            "overview",
            data.overview,
            db,
            ver,
            "skipped_series" in present,
            "batch_ledger" in present,
            "forecast_history" in present,
        )
    except NotLoaded:
        st.title("Capacity outlook")
        return not_loaded_note()
    if ov.series == 0:
        return no_data_page(db, f"`{db}` has the tables but no forecast in them yet.")
    try:
        used = load("run_settings", data.run_settings, db, ver) if "batch_ledger" in present else {}
    except NotLoaded:
        used = {}
    shown = {k: used[k] for k in SHOWN_SETTINGS if k in used and not isinstance(used[k], list)}
    mixed = {k: used[k] for k in SHOWN_SETTINGS if isinstance(used.get(k), list)}
    settings = dataclasses.replace(
        settings, **shown
    )  # what the results were made with, not this shell's
    header(ov, settings, mixed)
    note = st.empty()
    linked = st.query_params.get("server")  # the digests link each server here: ?server=<id>
    if linked and st.session_state.get("_linked_server") != linked:
        st.session_state["_linked_server"] = linked
        open_in_deep_dive(linked)
    risk_tab, plan_tab, track_tab, tournament_tab, deep_tab = st.tabs(
        list(VIEWS), key="view", on_change="rerun"
    )
    if risk_tab.open:
        with risk_tab:
            risk_view(db, ver, settings)
    if plan_tab.open:
        with plan_tab:
            plan_view(db, ver, settings, present)
    if track_tab.open:
        with track_tab:
            track_view(db, ver, settings, present, ov.vintages)
    if tournament_tab.open:
        with tournament_tab:
            tournament_view(db, ver, settings, present)
    if deep_tab.open:
        with deep_tab:
            deep_dive_view(db, ver, settings, present)
    with note:
        refreshing_note()


main()
