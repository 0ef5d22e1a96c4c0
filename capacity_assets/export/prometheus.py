"""The published forecasts in Prometheus' text exposition format, for SREs who alert and graph there.

Pure pandas and strings (no Dagster, no store): ``exposition`` turns the published tables into the
text node_exporter's textfile collector (or any scraper) serves. Percentages become ratios (0–1),
Prometheus' convention for utilisation, so a forecast sits next to
``instance:node_cpu_utilisation:rate5m`` on one axis. Every series carries the same labels
(server, resource, department, app manager), so rules and dashboards join on them; samples are
sorted, so two exports of the same tables are byte for byte the same file.
"""

from __future__ import annotations

import re

import pandas as pd

HORIZONS = (30, 90, 180)  # forecast days ahead (day 1: the day after the last history day)
TRUST_LEVELS = {"low": 0, "medium": 1, "high": 2}
LABELS = ("resource", "department", "app_manager")  # after the server label
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# name -> help, in the file's order
METRICS = {
    "capacity_forecast_upper_ratio": "Upper bound of the golden record's forecast (utilisation "
    "0-1, the band CAPACITY_INTERVAL wide) on the forecast day given by horizon.",
    "capacity_forecast_ratio": "The golden record's forecast (utilisation 0-1) on the forecast "
    "day given by horizon.",
    # the contract's name (issue 24), kept exactly: users' rules and dashboards select it. promtool's
    # lint prefers base units and reports this one name, the file's only finding (see the README)
    "capacity_days_to_breach": "Days from the first forecast day to the first day the forecast's "
    "upper bound reaches the series' threshold (0: already there), as of the run: risk_exceptions' "
    "days_to_breach. Only series at risk within CAPACITY_RISK_DAYS.",
    # the same as a moment: a count of days grows stale between weekly runs, while a rule's
    # `- time()` on this stays right (the shipped rules use it)
    "capacity_breach_timestamp_seconds": "First day (00:00 UTC, Unix time) the forecast's upper "
    "bound reaches the series' threshold; the last history day when the series is already above "
    "it. Only series at risk within CAPACITY_RISK_DAYS; days to breach: "
    "(capacity_breach_timestamp_seconds - time()) / 86400.",
    "capacity_threshold_ratio": "Saturation threshold the series is judged against (0-1).",
    "capacity_forecast_trust": "How far to trust the series' forecast: 0 low, 1 medium, 2 high.",
    "capacity_batch_published_timestamp_seconds": "When the batch's results were last published "
    "(Unix time).",
}


class ExportError(ValueError):
    """The tables or settings cannot make a valid file; the message says which."""


def escape_label(value) -> str:
    """A label value as the format wants it: backslash, double quote and line feed escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def check_server_label(name: str) -> None:
    """CAPACITY_PROM_SERVER_LABEL must be a label name the format allows and not one of ours."""
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ExportError(
            f"CAPACITY_PROM_SERVER_LABEL={name!r} is not a Prometheus label name "
            "(letters, digits and _, not starting with a digit or __)"
        )
    if name in (*LABELS, "horizon", "batch"):
        raise ExportError(
            f"CAPACITY_PROM_SERVER_LABEL={name!r} is a label the export uses for something else: "
            f"choose another name than {', '.join((*LABELS, 'horizon', 'batch'))}"
        )


def _value(x: float) -> str:
    """Ten significant digits: the stored value to the precision it has, and readable."""
    return f"{float(x):.10g}"


def _unix(moments: pd.Series) -> pd.Series:
    """Seconds since 1970 of naive UTC moments or days (how the store keeps them)."""
    moments = pd.to_datetime(moments)
    if moments.dt.tz is None:
        moments = moments.dt.tz_localize("UTC")
    return (moments - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _owners(series: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """``series`` (batch, server_id, resource) with department, app_manager and threshold from the
    capacity plan, which holds one row per forecast series, published with it."""
    keep = ["batch", "server_id", "resource", "department", "app_manager", "threshold"]
    plan = plan.reindex(columns=keep).drop_duplicates(["batch", "server_id", "resource"])
    out = series.merge(plan, on=["batch", "server_id", "resource"], how="left")
    for c in ("department", "app_manager"):
        out[c] = out[c].astype("string").fillna("")
    return out


def _metric(
    name: str, frame: pd.DataFrame, labels: dict[str, str], value: str, order: list[str]
) -> list[str]:
    """HELP, TYPE and one sample per row of ``frame`` (``labels``: label name -> column), sorted by
    the ``order`` columns."""
    lines = [f"# HELP {name} {_escape_help(METRICS[name])}", f"# TYPE {name} gauge"]
    if not len(frame):
        return lines
    frame = frame.sort_values(order, kind="stable")
    text = pd.Series("", index=frame.index, dtype="object")
    for i, (label, col) in enumerate(labels.items()):
        escaped = frame[col].astype("string").fillna("").map(escape_label).astype("object")
        text = text + ("," if i else "") + label + '="' + escaped + '"'
    samples = pd.DataFrame({"labels": text, "value": frame[value].map(_value)})
    # a label set once per metric: a series listed twice would make the whole scrape fail
    samples = samples.drop_duplicates("labels")
    return lines + (name + "{" + samples["labels"] + "} " + samples["value"]).tolist()


def exposition(
    points: pd.DataFrame,
    plan: pd.DataFrame,
    risk: pd.DataFrame,
    ledger: pd.DataFrame,
    server_label: str = "instance",
    horizons: tuple[int, ...] = HORIZONS,
) -> str:
    """The file's text.

    ``points``: the golden record on forecast days 1 and ``horizons`` (batch, server_id, resource,
    day, yhat, yhat_upper, trust; values in percent, ``store.monitoring.published``); ``plan``:
    capacity_plan (owners and threshold per series); ``risk``: risk_exceptions; ``ledger``:
    batch_ledger. ``server_label`` names the label that holds the server id
    (CAPACITY_PROM_SERVER_LABEL), so the forecasts join the live metrics they were made from.
    """
    check_server_label(server_label)
    labels = {server_label: "server_id", **{c: c for c in LABELS}}
    key = ["batch", "server_id", "resource"]
    order = ["server_id", "resource", "department", "app_manager"]
    series = _owners(points.loc[points["day"] == 1, [*key, "trust"]].drop_duplicates(key), plan)
    ahead = points[points["day"].isin(horizons)].merge(
        series[[*key, "department", "app_manager"]], on=key, how="inner"
    )
    ahead = ahead.assign(
        horizon=ahead["day"].astype(int).astype(str) + "d",
        upper=ahead["yhat_upper"] / 100,
        ratio=ahead["yhat"] / 100,
    )
    series = series.assign(
        threshold_ratio=series["threshold"] / 100, trust_level=series["trust"].map(TRUST_LEVELS)
    )
    risk = risk.assign(
        department=risk["department"].astype("string").fillna(""),
        app_manager=risk["app_manager"].astype("string").fillna(""),
        breach=_unix(risk["first_breach_date"]),
    )
    ledger = ledger.assign(stamp=_unix(ledger["published_at"]))
    by_horizon = {**labels, "horizon": "horizon"}
    text = [
        *_metric("capacity_forecast_upper_ratio", ahead, by_horizon, "upper", [*order, "day"]),
        *_metric("capacity_forecast_ratio", ahead, by_horizon, "ratio", [*order, "day"]),
        *_metric("capacity_days_to_breach", risk, labels, "days_to_breach", order),
        *_metric("capacity_breach_timestamp_seconds", risk, labels, "breach", order),
        *_metric(
            "capacity_threshold_ratio",
            series[series["threshold"].notna()],
            labels,
            "threshold_ratio",
            order,
        ),
        *_metric(
            "capacity_forecast_trust",
            series[series["trust_level"].notna()],
            labels,
            "trust_level",
            order,
        ),
        *_metric(
            "capacity_batch_published_timestamp_seconds",
            ledger,
            {"batch": "batch"},
            "stamp",
            ["batch"],
        ),
    ]
    return "\n".join(text) + "\n"
