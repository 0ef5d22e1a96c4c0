"""Pools: each pool's demand against its capacity in units, published and under a scenario."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.schema import escape_markdown

PUBLISHED = "Published forecast"
NO_POOLS = (
    "No pools to show. A pool is the value of a `pool` column in the hierarchy "
    "(CAPACITY_HIERARCHY): a cluster, an application, a storage array. Add that column, and the "
    "server sizes (`cpu_cores`, `memory_gb`, `disk_gb`, `network_gbps`) its units are summed from, "
    "then run `capacity run`."
)


def render(loader: Loader, settings: CapacitySettings, present: set[str]) -> None:
    """The pools that breach soonest first, then one pool's days in units."""
    st.subheader("Pools")
    if "pool_outlook" not in present or "pool_demand" not in present:
        st.info(NO_POOLS)
        return
    try:
        outlook = loader.load("pool_outlook", data.pool_outlook)
    except NotLoaded:
        return widgets.not_loaded_note()
    if outlook.empty:
        st.info(NO_POOLS)
        return
    st.caption(
        "Capacity and demand summed over each pool's servers with a known size, in cores, GB or "
        "Gbps; the pool saturates at its capacity times the resource's threshold. Headroom is the "
        "smallest gap between that threshold and the upper demand over the forecast; 'servers "
        "that fit' counts more servers of the pool's median peak demand that fit in it."
    )
    scenarios = sorted(set(outlook["scenario"].astype(str)) - {""})
    choice = (
        st.selectbox("Scenario", [PUBLISHED, *scenarios], key="pools_scenario")
        if scenarios
        else PUBLISHED
    )
    scenario = "" if choice == PUBLISHED else choice
    rows = outlook[outlook["scenario"] == scenario].drop(columns="scenario")
    unsized = rows[rows["capacity_units"] <= 0]
    if len(unsized):
        st.warning(
            f"{len(unsized)} pool resource(s) have no server with a size in the hierarchy, so "
            "they have no units: "
            + ", ".join(
                f"{escape_markdown(p)} {r}" for p, r in zip(unsized["pool"], unsized["resource"])
            )
        )
    sized = rows[rows["capacity_units"] > 0]
    breaching = int(sized["first_breach_date"].notna().sum())
    c1, c2, c3 = st.columns(3)
    c1.metric("Pools", f"{rows['pool'].nunique():,}")
    c2.metric("Pool resources that breach", f"{breaching:,}")
    c3.metric("Servers in pools", f"{int(rows.groupby('pool')['servers'].max().sum()):,}")
    st.dataframe(
        sized[
            [
                "pool",
                "resource",
                "first_breach_date",
                "days_to_breach",
                "headroom_units",
                "unit",
                "servers_that_fit",
                "capacity_units",
                "threshold",
                "peak_demand_upper_units",
                "servers",
                "servers_without_size",
            ]
        ],
        hide_index=True,
        key="pools_table",
        height=widgets.table_height(len(sized)),
        column_config={
            "pool": "Pool",
            "resource": "Resource",
            "first_breach_date": st.column_config.DateColumn("First breach", format="YYYY-MM-DD"),
            "days_to_breach": st.column_config.NumberColumn("Days to breach"),
            "headroom_units": st.column_config.NumberColumn("Headroom", format="%.1f"),
            "unit": "Unit",
            "servers_that_fit": st.column_config.NumberColumn("Servers that fit"),
            "capacity_units": st.column_config.NumberColumn("Capacity", format="%.1f"),
            "threshold": st.column_config.NumberColumn("Threshold", format="%g %%"),
            "peak_demand_upper_units": st.column_config.NumberColumn(
                "Peak upper demand", format="%.1f"
            ),
            "servers": st.column_config.NumberColumn("Servers"),
            "servers_without_size": st.column_config.NumberColumn(
                "Without a size", help="servers the hierarchy gives no size for: not in the units"
            ),
        },
    )
    if sized.empty:
        return
    pools = list(dict.fromkeys(sized["pool"].astype(str)))  # soonest breach first
    c1, c2 = st.columns(2)
    pool = c1.selectbox("Pool", pools, key="pools_pool")
    resources = list(sized.loc[sized["pool"] == pool, "resource"].astype(str))
    resource = c2.selectbox("Resource", resources, key="pools_resource")
    try:
        days = loader.load("pool_demand", data.pool_demand, pool, scenario)
    except NotLoaded:
        return widgets.not_loaded_note()
    row = sized[(sized["pool"] == pool) & (sized["resource"] == resource)].iloc[0]
    label = charts.RESOURCE_LABEL.get(resource, resource)
    title = f"{pool}: {label} in {row['unit']}"
    if pd.notna(row["first_breach_date"]):
        title += f" — reaches {row['threshold']:g} % on {row['first_breach_date']:%d %b %Y}"
    st.plotly_chart(
        charts.pool_chart(days[days["resource"] == resource], title, row["unit"], scenario),
        key="pools_chart",
        config={"displayModeBar": False},
    )
