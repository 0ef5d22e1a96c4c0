"""Risk heatmap: which departments run out first, and the list of series to act on."""

from __future__ import annotations

import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.dashboard.views.deep_dive import open_in_deep_dive
from capacity_assets.schema import RESOURCES, escape_markdown

SEVERITIES = ("all", "critical", "warning")
SEVERITY_STYLE = {
    "critical": "color: #b91c1c; font-weight: 600",
    "warning": "color: #b45309; font-weight: 600",
}


def render(loader: Loader, settings: CapacitySettings) -> None:
    """Filters narrow each other (a department's managers only), so no choice leads to an empty list."""
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
        counts = loader.load("heatmap", data.risk_heatmap, severity)
    except NotLoaded:
        return widgets.not_loaded_note()
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
        managers = loader.load("managers", data.risk_managers, severity, department)
    except NotLoaded:
        return widgets.not_loaded_note()
    if st.session_state.get("risk_manager") not in [data.ALL, *managers]:
        st.session_state["risk_manager"] = data.ALL
    manager = c2.selectbox("App manager", [data.ALL, *managers], key="risk_manager")
    try:
        exceptions = loader.load("risk_list", data.risk_list, severity, department, manager)
    except NotLoaded:
        return widgets.not_loaded_note()

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
        height=widgets.table_height(len(exceptions)),
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
        file_name=widgets.safe_filename("risk", severity, department, manager),
        mime="text/csv",
        key="risk_csv",
        disabled=exceptions.empty,
    )
    if not exceptions.empty:
        ids = list(dict.fromkeys(exceptions["server_id"].astype(str)))
        target = c1.selectbox("Server to inspect", ids, key="risk_open_select")
        c2.button("Open in Deep dive", key="risk_open", on_click=open_in_deep_dive, args=(target,))
