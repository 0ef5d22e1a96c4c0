"""Deep dive: one server's history, backtests, forecast and plan, resource by resource."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from capacity_assets.config import CapacitySettings
from capacity_assets.dashboard import charts, data, widgets
from capacity_assets.dashboard.last_good import Loader, NotLoaded
from capacity_assets.schema import escape_markdown


def open_in_deep_dive(server: str) -> None:
    """For the risk list's button and the digests' ``?server=`` links: set before the widgets are
    drawn, with the search cleared so the server is among the choices."""
    st.session_state["deep_search"] = ""
    st.session_state["deep_select"] = server
    st.session_state["view"] = "Deep dive"


def render(loader: Loader, settings: CapacitySettings, present: set[str]) -> None:
    """Opens on the most urgent server, so the first look is the one that matters most."""
    st.subheader("Deep dive")
    c1, c2 = st.columns([1, 2])
    search = c1.text_input("Search server id", key="deep_search", placeholder="part of a server id")
    try:
        options = loader.load("servers", data.servers, search, "skipped_series" in present)
        urgent = loader.load("urgent", data.most_urgent_server)
    except NotLoaded:
        return widgets.not_loaded_note()
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
        detail = loader.load("server", data.server_detail, server, frozenset(present))
    except NotLoaded:
        return widgets.not_loaded_note()

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
