"""Capacity plan: what to buy by when, and what can be taken back."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded


def _signed(units: float) -> str:
    """A plan total as its steps add up (+16, -9.8, +2.5 with CAPACITY_ROUND_GB=0.5): never rounded to
    whole units, which read -9.8 Gbps on a 10 Gbps link as giving the whole link back."""
    return f"{units:+,.2f}".rstrip("0").rstrip(".")


def render(loader: Loader, settings: CapacitySettings, present: set[str]) -> None:
    """Department totals first (the budget), then the actions to place, the most urgent first."""
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
        totals = loader.load("plan_totals", data.plan_totals)
    except NotLoaded:
        return widgets.not_loaded_note()
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
        rows = loader.load("plan_list", data.plan_list, department, action)
    except NotLoaded:
        return widgets.not_loaded_note()
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
        height=widgets.table_height(len(rows)),
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
        file_name=widgets.safe_filename("plan", department, action),
        mime="text/csv",
        key="plan_csv",
        disabled=rows.empty,
    )
