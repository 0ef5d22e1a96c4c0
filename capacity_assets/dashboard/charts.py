"""Plotly figures as pure functions of small DataFrames, so they can be tested and reused without
Streamlit. One palette for every chart: a model keeps its colour from the tournament bars to the
deep dive, and red always means the threshold.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from capacity_assets.forecasting.engines.registry import ENGINES

PALETTE = {
    **{name: e.colour for name, e in ENGINES.items()},
    "actual": "#334155",  # slate
    "threshold": "#dc2626",  # red
    "breach": "#991b1b",
    "warn": "#dc2626",
    "neutral": "#94a3b8",
}
_EXTRA = ["#059669", "#7c3aed", "#db2777", "#0891b2"]
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13, color="#0f172a")
RESOURCE_LABEL = {"cpu": "CPU", "memory": "Memory", "disk": "Disk", "network": "Network"}


def model_color(model: str) -> str:
    """Palette colour of a contender; unknown contenders (a new engine) get a stable extra colour."""
    if model in PALETTE:
        return PALETTE[model]
    return _EXTRA[sum(map(ord, str(model))) % len(_EXTRA)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    base = dict(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=16)),
        height=height,
        font=FONT,
        margin=dict(l=10, r=10, t=60, b=10),
        plot_bgcolor="white",
        paper_bgcolor="white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    fig.update_layout(**{**base, **kw})
    fig.update_xaxes(showgrid=False, linecolor="#cbd5e1")
    fig.update_yaxes(gridcolor="#e2e8f0", zeroline=False)
    return fig


def empty_figure(title: str, message: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font=dict(size=15, color="#64748b"),
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height)


def risk_heatmap(
    counts: pd.DataFrame,
    resources: list[str],
    departments: list[str] | None = None,
    title: str = "Series at risk by department and resource",
) -> go.Figure:
    """Departments (rows, most series at risk on top) x resources; every cell shows its count, zeros
    included, so "no risk" is visible rather than a blank."""
    if departments is None:
        totals = (
            counts.groupby("department")["series"].sum().sort_values(ascending=False, kind="stable")
        )
        departments = list(totals.index)
    if not departments:
        return empty_figure(title, "No series at risk with this filter")
    grid = (
        counts.pivot_table(index="department", columns="resource", values="series", aggfunc="sum")
        .reindex(index=departments, columns=resources)
        .fillna(0)
        .astype(int)
    )
    z = grid.to_numpy()
    top = max(int(z.max()), 1)
    text_color = [["white" if v > top * 0.55 else "#0f172a" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=[RESOURCE_LABEL.get(r, r) for r in grid.columns],
            y=list(grid.index),
            colorscale=[[0, "#f8fafc"], [0.001, "#fee2e2"], [0.5, "#f87171"], [1, "#991b1b"]],
            zmin=0,
            zmax=top,
            xgap=3,
            ygap=3,
            colorbar=dict(title="Series", thickness=12),
            hovertemplate="%{y} · %{x}: %{z} series at risk<extra></extra>",
        )
    )
    for i, dep in enumerate(grid.index):
        for j, res in enumerate(grid.columns):
            fig.add_annotation(
                x=RESOURCE_LABEL.get(res, res),
                y=dep,
                text=str(z[i, j]),
                showarrow=False,
                font=dict(size=14, color=text_color[i][j]),
            )
    fig.update_yaxes(autorange="reversed", title=None)
    fig.update_xaxes(side="top", title=None)
    return _layout(
        fig, title, height=max(260, 70 + 42 * len(departments)), margin=dict(l=10, r=10, t=90, b=10)
    )


def wins_bar(
    wins: pd.DataFrame,
    by: str,
    title: str,
    order: list[str] | None = None,
    horizontal: bool = False,
) -> go.Figure:
    """Stacked wins per model, one bar per ``by`` value; labels are counts so shares read at a glance."""
    if wins.empty:
        return empty_figure(title, "No tournament results yet")
    cats = order or sorted(wins[by].unique(), key=str)
    label = (lambda c: RESOURCE_LABEL.get(c, c)) if by == "resource" else str
    fig = go.Figure()
    order_of = {m: i for i, m in enumerate(PALETTE)}
    for model in sorted(
        wins["champion"].unique(), key=lambda m: (order_of.get(m, len(order_of)), m)
    ):
        sub = (
            wins[wins["champion"] == model]
            .set_index(by)["wins"]
            .reindex(cats)
            .fillna(0)
            .astype(int)
        )
        xs, ys = [label(c) for c in cats], sub.tolist()
        fig.add_bar(
            name=model,
            x=ys if horizontal else xs,
            y=xs if horizontal else ys,
            orientation="h" if horizontal else "v",
            marker_color=model_color(model),
            text=[v if v else "" for v in ys],
            textposition="inside",
            hovertemplate=f"{model}: %{{{'x' if horizontal else 'y'}}} series<extra>%{{{'y' if horizontal else 'x'}}}</extra>",
        )
    fig.update_layout(
        barmode="stack", legend_traceorder="normal"
    )  # plotly reverses stacked legends
    count_axis = dict(title="Series won")
    if horizontal:
        fig.update_xaxes(**count_axis)
        fig.update_yaxes(autorange="reversed")
    else:
        fig.update_yaxes(**count_axis)
    return _layout(fig, title, height=max(320, 60 + 34 * len(cats)) if horizontal else 340)


def mape_histogram(
    bins: pd.DataFrame,
    mape_warn: float,
    bin_width: float,
    cap: float = 100.0,
    title: str = "Champion MAPE across series",
) -> go.Figure:
    """Backtest error distribution with the bad-MAPE threshold drawn where the check fires."""
    if bins.empty:
        return empty_figure(title, "No champion MAPE yet")
    colors = [
        PALETTE["warn"] if b + bin_width / 2 > mape_warn else PALETTE["prophet"]
        for b in bins["bin"]
    ]
    fig = go.Figure(
        go.Bar(
            x=bins["bin"] + bin_width / 2,
            y=bins["series"],
            width=bin_width * 0.92,
            marker_color=colors,
            showlegend=False,
            customdata=bins["bin"] + bin_width,
            hovertemplate="%{x:.0f} ± " + f"{bin_width / 2:g}" + " %: %{y} series<extra></extra>",
        )
    )
    fig.add_vline(x=mape_warn, line=dict(color=PALETTE["threshold"], dash="dash", width=2))
    fig.add_annotation(
        x=mape_warn,
        y=1,
        yref="paper",
        text=f"CAPACITY_MAPE_WARN {mape_warn:g} %",
        showarrow=False,
        xanchor="left",
        yanchor="top",
        xshift=6,
        font=dict(color=PALETTE["threshold"], size=12),
    )
    top = float(bins["bin"].max()) + bin_width
    fig.update_xaxes(
        title="Champion MAPE on the backtest (%)",
        ticksuffix=" %",
        range=[0, max(top, mape_warn * 1.2)],
    )
    fig.update_yaxes(title="Series")
    if top >= cap:
        fig.add_annotation(
            x=cap,
            y=0,
            yref="paper",
            text=f"≥ {cap:g} %",
            showarrow=False,
            yanchor="top",
            yshift=-2,
            font=dict(size=11, color="#64748b"),
        )
    return _layout(fig, title, height=340)


def server_resource_chart(
    resource: str,
    history: pd.DataFrame,
    backtest: pd.DataFrame,
    forecast: pd.DataFrame,
    threshold: float,
    breach: pd.Series | None = None,
    champion: str | None = None,
    mape: float | None = None,
    trust: str | None = None,
    interval: float | None = None,
    plan: pd.Series | None = None,
    height: int = 380,
) -> go.Figure:
    """One resource of one server: actuals, each contender's backtest, the champion's forecast band,
    the threshold and (when at risk) the first breach, on one utilisation axis; the unclipped demand
    drawn dashed where it goes beyond 100 %, and the capacity the plan says is needed."""
    label = RESOURCE_LABEL.get(resource, resource)
    title = label
    if plan is not None and plan["action"] in ("add", "reclaim"):
        units = (
            f" ({plan['change_units']:+g} {plan['unit']})"
            if pd.notna(plan.get("change_units")) and pd.notna(plan.get("unit"))
            else ""
        )
        title += f" — {plan['action']} {plan['change_pct']:+.0f} %{units}"
    if breach is not None:
        title += (
            f" — <span style='color:{PALETTE['breach']}'>{breach['severity']}: reaches {threshold:g} % on "
            f"{pd.Timestamp(breach['first_breach_date']):%d %b %Y}</span>"
        )
    if champion:
        sub = [f"champion {champion}"]
        if mape is not None and pd.notna(mape):
            sub.append(f"backtest MAPE {mape:.1f} %")
        if trust:
            sub.append(f"trust {trust}")
        title += "<br><span style='font-size:12px;color:#475569'>" + " · ".join(sub) + "</span>"
    if history.empty and forecast.empty:
        return empty_figure(title, "No history or forecast for this resource", height)
    fig = go.Figure()
    if not forecast.empty:
        color = model_color(str(forecast["model"].iloc[0]) if champion is None else champion)
        fig.add_scatter(
            x=forecast["ds"],
            y=forecast["yhat_upper"],
            mode="lines",
            line=dict(width=0),
            legendgroup="forecast",
            showlegend=False,
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=forecast["ds"],
            y=forecast["yhat_lower"],
            mode="lines",
            line=dict(width=0),
            fill="tonexty",
            fillcolor=_rgba(color, 0.18),
            name="forecast band",
            legendgroup="forecast",
            showlegend=False,
            hoverinfo="skip",
        )
    if not history.empty:
        fig.add_scatter(
            x=history["ds"],
            y=history["y"],
            mode="lines",
            name="actual",
            line=dict(color=PALETTE["actual"], width=1.4),
            hovertemplate="%{x|%d %b %Y}: %{y:.1f} %<extra>actual</extra>",
        )
    for contender, sub in backtest.groupby("contender", sort=True):
        fig.add_scatter(
            x=sub["ds"],
            y=sub["yhat"],
            mode="lines",
            name=f"{contender} backtest",
            line=dict(color=model_color(str(contender)), width=1.6, dash="dot"),
            hovertemplate="%{x|%d %b %Y}: %{y:.1f} %<extra>" + f"{contender} backtest</extra>",
        )
    if not forecast.empty:
        fig.add_scatter(
            x=forecast["ds"],
            y=forecast["yhat"],
            mode="lines",
            name=f"{champion or forecast['model'].iloc[0]} forecast"
            + (f" with {interval:.0%} band" if interval else " with band"),
            legendgroup="forecast",
            line=dict(color=color, width=2.4),
            hovertemplate="%{x|%d %b %Y}: %{y:.1f} %<extra>forecast</extra>",
        )
        fig.add_vline(
            x=pd.Timestamp(forecast["ds"].min()), line=dict(color="#94a3b8", width=1, dash="dot")
        )
    fig.add_hline(
        y=threshold,
        line=dict(color=PALETTE["threshold"], dash="dash", width=1.6),
        annotation_text=f"threshold {threshold:g} %",
        annotation_position="top left",
        annotation_font=dict(color=PALETTE["threshold"], size=11),
    )
    if breach is not None:
        when = pd.Timestamp(breach["first_breach_date"])
        fig.add_vline(x=when, line=dict(color=PALETTE["breach"], width=2))
        fig.add_scatter(
            x=[when],
            y=[threshold],
            mode="markers",
            name=f"first breach {when:%d %b %Y}",
            marker=dict(
                color=PALETTE["breach"],
                size=12,
                symbol="x-thin",
                line=dict(width=3, color=PALETTE["breach"]),
            ),
            hovertemplate=f"first breach {when:%d %b %Y}<extra></extra>",
        )
    top = 108
    if "demand_upper" in forecast.columns and (forecast["demand_upper"] > 100).any():
        over = forecast["demand_upper"].where(forecast["demand_upper"] > 100)
        fig.add_scatter(
            x=forecast["ds"],
            y=forecast["demand"].where(forecast["demand_upper"] > 100),
            mode="lines",
            name="demand beyond capacity",
            line=dict(color=PALETTE["breach"], width=1.6, dash="dash"),
            hovertemplate="%{x|%d %b %Y}: demand %{y:.1f} %<extra></extra>",
        )
        fig.add_scatter(
            x=forecast["ds"],
            y=over,
            mode="lines",
            name="demand, upper bound",
            line=dict(color=PALETTE["breach"], width=1, dash="dot"),
            hovertemplate="%{x|%d %b %Y}: upper demand %{y:.1f} %<extra></extra>",
        )
        top = max(top, float(over.max()) * 1.05)
    fig.update_yaxes(title="Utilisation (%)", range=[0, top], ticksuffix=" %")
    fig.update_xaxes(title=None, tickformat="%b %Y")
    return _layout(
        fig,
        title,
        height,
        margin=dict(l=10, r=10, t=64, b=10),
        legend=dict(
            orientation="h", yanchor="top", y=-0.1, xanchor="left", x=0, font=dict(size=11)
        ),
    )


def plan_totals_bar(totals: pd.DataFrame, title: str) -> go.Figure:
    """Series to add and to reclaim per department, stacked by resource."""
    if totals.empty:
        return empty_figure(title, "Nothing to add or reclaim")
    fig = go.Figure()
    colours = {"cpu": "#2563eb", "memory": "#f59e0b", "disk": "#10b981", "network": "#8b5cf6"}
    for action, sign in (("add", 1), ("reclaim", -1)):
        for resource, sub in totals[totals["action"] == action].groupby("resource", sort=True):
            fig.add_bar(
                y=sub["department"],
                x=sign * sub["series"],
                orientation="h",
                name=f"{action} {RESOURCE_LABEL.get(resource, resource)}",
                marker_color=colours.get(resource, PALETTE["neutral"]),
                marker_pattern_shape="" if action == "add" else "/",
                hovertemplate="%{y}: %{customdata} series<extra>" + f"{action} {resource}</extra>",
                customdata=sub["series"],
            )
    fig.update_layout(barmode="relative")
    fig.update_xaxes(title="series to reclaim (left) and to add (right)")
    return _layout(fig, title, height=max(320, 60 + 28 * totals["department"].nunique()))


HORIZON_COLOURS = {
    "1-7": "#0ea5e9",
    "8-30": "#2563eb",
    "31-90": "#7c3aed",
    "91-180": "#db2777",
}  # near -> far


def _vintage_axis(fig: go.Figure, vintages) -> None:
    """One tick per kept vintage (weekly dates): plotly's automatic date ticks invent mid-week ones."""
    ticks = sorted(pd.to_datetime(pd.Series(vintages)).drop_duplicates())
    fig.update_xaxes(
        title="Vintage (first forecast day)",
        tickvals=ticks,
        tickformat="%d %b %Y",
        range=[ticks[0] - pd.Timedelta(days=2), ticks[-1] + pd.Timedelta(days=2)]
        if ticks
        else None,
    )


def accuracy_by_vintage(acc: pd.DataFrame, stat: str, buckets, title: str) -> go.Figure:
    """Realised MAPE of each vintage, one line per horizon bucket: did last month's forecasts hold up,
    and does the far horizon deteriorate as the backtest said? ``stat``: median_mape or mean_mape."""
    rows = acc[acc["horizon_bucket"].isin(list(buckets))]
    if rows.empty:
        return empty_figure(title, "No vintage has been scored against actuals yet")
    fig = go.Figure()
    for bucket in buckets:
        sub = rows[rows["horizon_bucket"] == bucket]
        if sub.empty:
            continue
        fig.add_scatter(
            x=sub["vintage"],
            y=sub[stat],
            mode="lines+markers",
            name=f"days {bucket}",
            line=dict(color=HORIZON_COLOURS.get(bucket, PALETTE["neutral"]), width=2.4),
            marker=dict(size=8),
            customdata=sub[["series", "days_scored"]].to_numpy(),
            hovertemplate="%{x|%d %b %Y}: %{y:.1f} %<br>%{customdata[0]} series, "
            "%{customdata[1]} days scored<extra>days " + bucket + "</extra>",
        )
    _vintage_axis(fig, rows["vintage"])
    fig.update_yaxes(
        title=("Median" if stat.startswith("median") else "Mean") + " MAPE across series (%)",
        ticksuffix=" %",
        rangemode="tozero",
    )
    return _layout(fig, title, height=360)


def risk_calls_by_vintage(calls: pd.DataFrame, title: str) -> go.Figure:
    """Precision and recall of each vintage's risk calls; a hollow marker is a score 'so far' (the
    vintage's risk window has not passed: a call can still come true, a precision still rise)."""
    scored = calls[calls["precision"].notna() | calls["recall"].notna()] if len(calls) else calls
    if scored.empty:
        return empty_figure(
            title, "No risk call can be scored yet: no series was flagged or crossed", height=300
        )
    fig = go.Figure()
    for col, colour in (("precision", "#2563eb"), ("recall", "#059669")):
        fig.add_scatter(
            x=scored["vintage"],
            y=scored[col],
            mode="lines+markers",
            name=col,
            line=dict(color=colour, width=2.2),
            marker=dict(
                size=10,
                color=colour,
                line=dict(color=colour, width=2),
                symbol=["circle" if f else "circle-open" for f in scored["final"]],
            ),
            customdata=[["final" if f else "so far"] for f in scored["final"]],
            hovertemplate="%{x|%d %b %Y}: %{y:.0%} (%{customdata[0]})<extra>" + col + "</extra>",
        )
    _vintage_axis(fig, scored["vintage"])
    fig.update_yaxes(title="Share", tickformat=".0%", range=[-0.05, 1.05])
    return _layout(fig, title, height=300)


def pool_chart(days: pd.DataFrame, title: str, unit: str, scenario: str = "") -> go.Figure:
    """A pool's demand against its capacity over the horizon, in units: the installed capacity,
    the threshold (red), the forecast demand and its upper bound (a band); under a scenario, the
    published upper demand dotted beside the scenario's."""
    if days.empty:
        return empty_figure(title, "No forecast days for this pool")
    fig = go.Figure()
    base, shown = days[days["scenario"] == ""], days[days["scenario"] == scenario]
    colour = "#2563eb"
    fig.add_scatter(
        x=shown["ds"],
        y=shown["demand_upper_units"],
        mode="lines",
        line=dict(width=0),
        showlegend=False,
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=shown["ds"],
        y=shown["demand_units"],
        mode="lines",
        name="demand",
        line=dict(color=colour, width=2),
        fill="tonexty",
        fillcolor=_rgba(colour, 0.18),
    )
    fig.add_scatter(
        x=shown["ds"],
        y=shown["demand_upper_units"],
        mode="lines",
        name="upper demand",
        line=dict(color=colour, width=1, dash="dash"),
    )
    if scenario and not base.empty:
        fig.add_scatter(
            x=base["ds"],
            y=base["demand_upper_units"],
            mode="lines",
            name="upper demand, published",
            line=dict(color=PALETTE["neutral"], dash="dot"),
        )
    fig.add_scatter(
        x=shown["ds"],
        y=shown["capacity_units"],
        mode="lines",
        name="capacity",
        line=dict(color=PALETTE["actual"], width=1.6, shape="hv"),
    )
    fig.add_scatter(
        x=shown["ds"],
        y=shown["threshold_units"],
        mode="lines",
        name="threshold",
        line=dict(color=PALETTE["threshold"], width=1.6, dash="dash", shape="hv"),
    )
    fig.update_yaxes(title=unit, rangemode="tozero")
    return _layout(fig, title)
