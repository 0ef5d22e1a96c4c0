"""Tournament summary: which models win where, and which series are forecast too poorly to trust."""

from __future__ import annotations

import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.schema import RESOURCES


def render(loader: Loader, settings: CapacitySettings, present: set[str]) -> None:
    """How far to trust the forecasts: the worst series are listed, so planners check those first."""
    st.subheader("Tournament summary")
    st.caption(
        "Each series is forecast by every contender; the one with the lowest MAPE over the "
        "backtest and the later windows becomes its champion (a single model must beat the "
        "error-weighted combination by 10 %, so the combination nearly always wins). Series above {settings.mape_warn:g} % MAPE "
        "are flagged: plan on them with care."
    )
    bin_width = 2.0
    try:
        t = loader.load(
            "tournament",
            data.tournament,
            settings.mape_warn,
            "business_hierarchy" in present,
            bin_width,
        )
    except NotLoaded:
        return widgets.not_loaded_note()
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
        height=widgets.table_height(len(t.bad_mape), 400),
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
