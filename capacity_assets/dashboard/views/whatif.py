"""What if: a scenario of CAPACITY_SCENARIOS against the published forecast: exceptions it adds and
clears, breach dates it moves, and the capacity to add or reclaim per department in units. The
comparison is ``whatif.compare``'s, the one `capacity whatif` prints."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.schema import escape_markdown
from capacity_assets.whatif.compare import risk_changes

NO_SCENARIOS = (
    "No scenarios to compare. Write the planned changes (added load, resizes, migrations, "
    "retirements) in a YAML file, set `CAPACITY_SCENARIOS` to its path and run `capacity run`; "
    "`capacity whatif FILE` answers from the published forecast without storing anything."
)


COLUMNS = {
    "server_id": st.column_config.TextColumn("Server"),
    "resource": "Resource",
    "department": "Department",
    "first_breach_date": "First breach",
    "days_to_breach": st.column_config.NumberColumn("Days to breach"),
    "baseline_first_breach": "Published breach",
    "scenario_first_breach": "Scenario breach",
    "days": st.column_config.NumberColumn("Days moved", format="%+d"),
}


def _units(value) -> str:
    """Units as the plan's steps add up (+16, -9.8), never rounded to whole units."""
    return "–" if pd.isna(value) else f"{value:+,.2f}".rstrip("0").rstrip(".")


def _owners(rows: pd.DataFrame, risk: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (server_id, resource, …) with the department the risk list gives them."""
    owners = risk[["server_id", "resource", "department"]].astype(str).drop_duplicates()
    return rows.merge(owners, on=["server_id", "resource"], how="left")


def render(loader: Loader, settings: CapacitySettings, present: set[str]) -> None:
    """Pick a scenario; its changes to the risk list first, then to the plan's totals."""
    st.subheader("What if")
    if not {"scenario_risk", "scenario_plan"} <= present:
        st.info(NO_SCENARIOS)
        return
    try:
        names = loader.load("scenario_names", data.scenario_names)
    except NotLoaded:
        return widgets.not_loaded_note()
    if not names:
        st.info(NO_SCENARIOS)
        return
    name = st.selectbox("Scenario", names, key="whatif_scenario")
    try:
        sc = loader.load("scenario", data.scenario, name)
    except NotLoaded:
        return widgets.not_loaded_note()
    changes = risk_changes(sc.risk, sc.baseline_risk)
    key = ["server_id", "resource"]
    new = _owners(
        pd.DataFrame(changes["new"], columns=[*key, "first_breach_date", "days_to_breach"]),
        sc.risk,
    )
    cleared = _owners(pd.DataFrame(changes["cleared"], columns=key), sc.baseline_risk)
    moved = _owners(
        pd.DataFrame(
            changes["moved"],
            columns=[*key, "baseline_first_breach", "scenario_first_breach", "days"],
        ),
        sc.risk,
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("New exceptions", f"{len(new):,}")
    c2.metric("Cleared exceptions", f"{len(cleared):,}")
    c3.metric("Breach dates moved", f"{len(moved):,}")
    if not (len(new) or len(cleared) or len(moved)):
        st.success(
            f"Scenario {escape_markdown(name)} changes no exception against the published forecast."
        )
    for title, rows, key in (
        ("New exceptions", new, "whatif_new"),
        ("Cleared exceptions", cleared, "whatif_cleared"),
        ("Breach dates moved", moved, "whatif_moved"),
    ):
        if len(rows):
            st.markdown(f"**{title}** ({len(rows):,})")
            st.dataframe(
                rows,
                hide_index=True,
                key=key,
                height=widgets.table_height(len(rows), cap=300),
                column_config=COLUMNS,
            )
    st.markdown("**Capacity to add or reclaim by department**, published plan against the scenario")
    plan = sc.plan
    if plan.empty:
        st.info("Neither plan adds or reclaims anything.")
        return
    shown = pd.DataFrame(
        {
            "department": plan["department"],
            "resource": plan["resource"],
            "action": plan["action"],
            "unit": plan["unit"].astype("string").fillna("% only"),
            "published": [_units(v) for v in plan["units_baseline"]],
            "scenario": [_units(v) for v in plan["units"]],
            "change": [
                _units((0 if pd.isna(s) else s) - (0 if pd.isna(b) else b))
                if pd.notna(s) or pd.notna(b)
                else "–"
                for s, b in zip(plan["units"], plan["units_baseline"])
            ],
            "series_published": plan["series_baseline"].fillna(0).astype(int),
            "series_scenario": plan["series"].fillna(0).astype(int),
        }
    ).sort_values(["department", "resource", "action"], key=lambda c: c.astype(str).str.lower())
    differs = (shown["published"] != shown["scenario"]) | (
        shown["series_published"] != shown["series_scenario"]
    )
    if st.toggle("Only what the scenario changes", value=True, key="whatif_changed_only"):
        shown = shown[differs]
        if shown.empty:
            st.info(f"Scenario {escape_markdown(name)} changes no department's plan total.")
            return
    st.dataframe(
        shown,
        hide_index=True,
        key="whatif_plan",
        height=widgets.table_height(len(shown)),
        column_config={
            "department": "Department",
            "resource": "Resource",
            "action": "Action",
            "unit": "Unit",
            "published": "Published (units)",
            "scenario": "Scenario (units)",
            "change": "Change (units)",
            "series_published": st.column_config.NumberColumn("Series, published"),
            "series_scenario": st.column_config.NumberColumn("Series, scenario"),
        },
    )
