"""Track record: how right past forecasts and risk calls were, and what changed since last week."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.schema import escape_markdown

CHANGE_STYLE = {"new": "color: #b91c1c; font-weight: 600"}
STATS = {"median_mape": "Median", "mean_mape": "Mean"}
ALL_VINTAGES = "All kept vintages"


def render(loader: Loader, settings: CapacitySettings, present: set[str], kept: int) -> None:
    """Was the forecast right? Realised accuracy, risk calls that came true, and what changed this week."""
    st.subheader("Track record")
    st.caption(
        "Every weekly run keeps its forecast as a *vintage* (named after its first forecast day); as actuals "
        "arrive, each vintage is scored against what was measured. A vintage is scored only on the days that "
        "have happened, so the newest ones cover the near horizon only."
    )
    try:
        has_status = "status" in loader.load("risk_columns", data.columns, "risk_exceptions")
        tr = loader.load("track", data.track_record, frozenset(present), has_status)
    except NotLoaded:
        return widgets.not_loaded_note()
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
    _risk_calls_section(loader, tr, settings)
    _changes_section(loader, tr, has_status, "risk_resolved" in present)


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
        height=widgets.table_height(len(shown), 400),
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


def _risk_calls_section(loader: Loader, tr: data.TrackRecord, settings: CapacitySettings) -> None:
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
            dept = loader.load(
                "track_dept",
                data.risk_calls_by_department,
                None if vintage == ALL_VINTAGES else vintage,
            )
        except NotLoaded:
            return widgets.not_loaded_note()
        st.dataframe(
            _calls_table(dept),
            hide_index=True,
            key="track_dept_table",
            column_config=CALLS_COLUMNS | {"department": st.column_config.TextColumn("Department")},
        )


def _changes_section(
    loader: Loader, tr: data.TrackRecord, has_status: bool, has_resolved: bool
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
        ch = loader.load("track_changes", data.changes, has_status, has_resolved)
    except NotLoaded:
        return widgets.not_loaded_note()
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
            height=widgets.table_height(len(ch.exceptions)),
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
            height=widgets.table_height(len(ch.resolved)),
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
