"""Column contracts of every table the pipeline writes.

The DuckDB IO manager inserts by column position, so every producer returns its columns in exactly
this order (``conform``). Users' SQL and dashboards depend on these names: change them only with
the README.
"""

from __future__ import annotations

import pandas as pd

RESOURCES = ("cpu", "memory", "disk", "network")
SERIES_KEY = ["server_id", "resource"]
BATCH_SERIES_KEY = ["batch", *SERIES_KEY]  # a series as stored: batch tables are keyed by this
# a series in one vintage: the track record keeps every vintage of a series side by side
VINTAGE_SERIES_KEY = ["batch", "vintage", *SERIES_KEY]

TIMESTAMP = (
    "timestamp"  # contract type of a moment (UTC, naive); every other datetime64 column is a day
)

# name -> pandas dtype, in table order
PROCESSED_DATA = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "y": "float64",
    "filled": "bool",
}
SKIPPED_SERIES = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "first_ds": "datetime64[ns]",
    "last_ds": "datetime64[ns]",
    "days": "int64",
    "reason": "string",
}
# what an engine's predict returns: uncalibrated, unclipped
RAW_RESULTS = {
    "server_id": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "yhat": "float64",
    "yhat_lower": "float64",
    "yhat_upper": "float64",
    "split": "string",
}
# a contender's finished rows (assets prepend `batch`): bounds calibrated, yhat* clipped to 0–100,
# demand* the same forecast before clipping (what the workload would use if it could)
# `origin` last (added for issue 26): the last day the fit that made the row saw
ENGINE_RESULTS = {
    **RAW_RESULTS,
    "model": "string",
    "demand": "float64",
    "demand_upper": "float64",
    "origin": "datetime64[ns]",
}
MODEL_RESULTS = {"batch": "string", **ENGINE_RESULTS}

# table name -> columns that are DATEs (stored as DATE, not TIMESTAMP)
DATE_COLUMNS = (
    "ds",
    "origin",
    "first_ds",
    "last_ds",
    "first_breach_date",
    "history_end",
    "needed_by",
    "vintage",
    "first_flagged",
    "last_flagged",
    "resolved_in",
    "first_crossed",
    "window_end",
    "baseline_first_breach_date",
    "forecast_breach_date",
)


def quote_ident(name: str) -> str:
    """A column or table name as a DuckDB identifier (names from users' file headers included)."""
    return '"' + str(name).replace('"', '""') + '"'


def escape_markdown(text) -> str:
    """User text (a server id, a department) shown as itself in markdown, never as formatting."""
    out = str(text).replace("\\", "\\\\").replace("\n", " ").replace("\r", " ")
    for ch in "`*_[]<>|~$":  # inline formatting, links, tables, HTML and Streamlit's LaTeX
        out = out.replace(ch, "\\" + ch)
    return out


def find_column(frame: pd.DataFrame, name: str) -> str | None:
    """The column of ``frame`` called ``name``, else the one matching it ignoring case and
    surrounding blanks (None when there is none). Optional hierarchy columns come from spreadsheet
    headers ('App_Manager_Email '), and the pipeline keeps extra headers as written; an exact name
    wins so that 'threshold_cpu' next to 'Threshold_CPU' is not decided by column order."""
    if name in frame.columns:
        return name
    wanted = name.strip().lower()
    for c in frame.columns:
        if str(c).strip().lower() == wanted:
            return c
    return None


def series_names(df: pd.DataFrame, limit: int = 10) -> list[str]:
    """The first ``limit`` distinct series of ``df`` as 'server/resource', for messages that name them."""
    pairs = df[["server_id", "resource"]].drop_duplicates().head(limit)
    return [f"{s}/{r}" for s, r in zip(pairs["server_id"], pairs["resource"])]


def empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="datetime64[ns]" if t == TIMESTAMP else t) for c, t in columns.items()}
    )


def conform(df: pd.DataFrame, columns: dict[str, str], extra: bool = False) -> pd.DataFrame:
    """Return ``df`` with exactly the contract's columns, in order and with its dtypes.

    With ``extra=True`` additional columns are kept after the contract's (hierarchy attributes).
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; found {list(df.columns)}")
    cols = list(columns) + ([c for c in df.columns if c not in columns] if extra else [])
    out = df.loc[:, cols].copy()
    for c, t in columns.items():
        if t == TIMESTAMP:  # a moment, kept to the second (naive UTC)
            out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")
        elif t.startswith("datetime"):  # a day
            out[c] = pd.to_datetime(out[c]).dt.normalize().astype("datetime64[ns]")
        else:
            out[c] = out[c].astype(t)
    return out.reset_index(drop=True)


# --- tournament, golden record, risk ---------------------------------------------------------------
def champions_columns(contenders) -> dict[str, str]:
    """CHAMPIONS for any list of contenders: a new contender adds its columns, in registry order."""
    names = list(contenders)
    return {
        "batch": "string",
        "server_id": "string",
        "resource": "string",
        **{f"{n}_mape": "float64" for n in names},
        "champion": "string",
        "champion_mape": "float64",
        "trust": "string",
        **{
            f"{n}_{m}": t
            for n in names
            for m, t in (
                ("wape", "float64"),
                ("mae", "float64"),
                ("coverage", "float64"),
                ("model", "string"),
            )
        },
        # how the pick was made (issue 26): origins pooled, each contender's pooled error
        "windows": "int64",
        **{f"{n}_pooled_mape": "float64" for n in names},
    }


FORECASTS = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "yhat": "float64",
    "yhat_lower": "float64",
    "yhat_upper": "float64",
    "model": "string",
    "champion": "string",
    "champion_mape": "float64",
    "trust": "string",
    "run_id": "string",
    "generated_at": TIMESTAMP,
    "demand": "float64",
    "demand_upper": "float64",
}
# hierarchy attributes beyond department/app_manager follow these columns (conform(extra=True))
RISK_EXCEPTIONS = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "department": "string",
    "app_manager": "string",
    "first_breach_date": "datetime64[ns]",
    "days_to_breach": "int64",
    "peak_upper": "float64",
    "peak_yhat": "float64",
    "model": "string",
    "champion_mape": "float64",
    "trust": "string",
    "severity": "string",
    "threshold": "float64",
}
# one row per batch: what its last publication was made from (store/ledger.py)
BATCH_LEDGER = {
    "batch": "string",
    "run_id": "string",
    "fingerprint": "string",
    "published_at": TIMESTAMP,
    "series": "int64",
    "rows": "int64",
    "code_version": "string",
    "settings": "string",
    "hierarchy_version": "string",
}
# one row per forecast series: how much capacity to add or reclaim, and by when (risk/plan.py)
CAPACITY_PLAN = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "department": "string",
    "app_manager": "string",
    "threshold": "float64",
    "target": "float64",
    "peak_demand_upper": "float64",
    "needed_by": "datetime64[ns]",
    "action": "string",
    "change_pct": "float64",
    "change_units": "float64",
    "unit": "string",
    "trust": "string",
    "review": "bool",
}

# --- track record (track/) ---------------------------------------------------------------------
# forecast_history: one row per batch x vintage x series x future day. Compact on purpose (26
# vintages of a whole fleet): only what scoring needs; forecasts as float32 rounded to 0.01 pp (see
# track/vintages.py); none of the golden record's per-series constants that scoring does not use
# (champion, champion_mape, trust, generated_at, demand*). `threshold` is the series' saturation
# threshold when the vintage was made (risk calls are judged against it); constant per series, it
# costs next to nothing in DuckDB, and float64 keeps 92.3 exactly 92.3 for the `>=` comparison.
FORECAST_HISTORY = {
    "batch": "string",
    "vintage": "datetime64[ns]",
    "run_id": "string",
    "server_id": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "yhat": "float32",
    "yhat_lower": "float32",
    "yhat_upper": "float32",
    "model": "string",
    "threshold": "float64",
}

# forecast_accuracy: one row per batch x vintage x series x horizon bucket that has a scored day
FORECAST_ACCURACY = {
    "batch": "string",
    "vintage": "datetime64[ns]",
    "server_id": "string",
    "resource": "string",
    "model": "string",
    "horizon_bucket": "string",
    "days_scored": "int64",
    "mape": "float64",
    "wape": "float64",
    "bias": "float64",
    "band_coverage": "float64",
}

# risk_history: one row per batch x vintage x series flagged in that vintage's risk_exceptions
RISK_HISTORY = {
    "batch": "string",
    "vintage": "datetime64[ns]",
    "run_id": "string",
    "server_id": "string",
    "resource": "string",
    "severity": "string",
    "threshold": "float64",
    "first_breach_date": "datetime64[ns]",
    "department": "string",
    "app_manager": "string",
}

# risk_call_outcomes(): one row per batch x vintage x series forecast in that vintage
RISK_CALL_OUTCOMES = {
    "batch": "string",
    "vintage": "datetime64[ns]",
    "server_id": "string",
    "resource": "string",
    "department": "string",
    "app_manager": "string",
    "flagged": "bool",
    "severity": "string",
    "threshold": "float64",
    "first_breach_date": "datetime64[ns]",
    "crossed": "bool",
    "first_crossed": "datetime64[ns]",
    "window_end": "datetime64[ns]",
    "days_measured": "int64",
    "status": "string",
}

# risk_resolved: one row per series flagged in the previous vintage and not in this one
RISK_RESOLVED = {
    "batch": "string",
    "server_id": "string",
    "resource": "string",
    "department": "string",
    "app_manager": "string",
    "last_flagged": "datetime64[ns]",
    "resolved_in": "datetime64[ns]",
    "reason": "string",
    "threshold_before": "float64",
    "threshold_now": "float64",
}
# risk_exceptions as stored: the risk list, then its lifecycle (track/lifecycle.py), then hierarchy extras
RISK_LIFECYCLE = {"status": "string", "first_flagged": "datetime64[ns]"}
RISK_EXCEPTIONS_STORED = {**RISK_EXCEPTIONS, **RISK_LIFECYCLE}

# business_hierarchy: one row per server; any extra hierarchy columns follow these (inputs/hierarchy.py)
HIERARCHY = {"server_id": "string", "department": "string", "app_manager": "string"}

# what if (whatif/): the golden record, the risk list and the plan under each scenario of
# CAPACITY_SCENARIOS; `scenario` follows `batch`, then the baseline table's columns
_AFTER_BATCH = {"batch": "string", "scenario": "string"}
SCENARIO_FORECASTS = {**_AFTER_BATCH, **{c: t for c, t in FORECASTS.items() if c != "batch"}}
SCENARIO_RISK = {
    **_AFTER_BATCH,
    **{c: t for c, t in RISK_EXCEPTIONS.items() if c != "batch"},
    "baseline_first_breach_date": "datetime64[ns]",
    "days_moved": "Int64",  # empty for an exception the baseline does not list
}
SCENARIO_PLAN = {**_AFTER_BATCH, **{c: t for c, t in CAPACITY_PLAN.items() if c != "batch"}}

# pools (risk/pools.py): the hierarchy's `pool` column summed in units, per scenario ('' = the
# published golden record); not partitioned: a pool's servers span batches
POOL_OUTLOOK = {
    "scenario": "string",
    "pool": "string",
    "resource": "string",
    "unit": "string",
    "servers": "int64",
    "servers_without_size": "int64",
    "capacity_units": "float64",
    "threshold": "float64",
    "threshold_units": "float64",
    "peak_demand_units": "float64",
    "peak_demand_upper_units": "float64",
    "headroom_units": "float64",
    "first_breach_date": "datetime64[ns]",
    "days_to_breach": "Int64",
    "forecast_breach_date": "datetime64[ns]",
    "median_server_units": "float64",
    "servers_that_fit": "Int64",
}
POOL_DEMAND = {
    "scenario": "string",
    "pool": "string",
    "resource": "string",
    "ds": "datetime64[ns]",
    "capacity_units": "float64",
    "threshold_units": "float64",
    "demand_units": "float64",
    "demand_upper_units": "float64",
}


def table_contracts(contenders) -> dict[str, dict[str, str]]:
    """Every table the asset graph writes -> its contract, for the fitted ``contenders`` (the
    combination is scored with them). Tables with hierarchy extras (business_hierarchy,
    risk_exceptions) list the contract's columns; the extras follow them as the file names them."""
    from capacity_assets.forecasting.engines.registry import COMBINERS  # registry imports schema

    names = (*contenders, *COMBINERS)
    return {
        "business_hierarchy": HIERARCHY,
        "processed_data": PROCESSED_DATA,
        "skipped_series": SKIPPED_SERIES,
        **{f"{n}_results": MODEL_RESULTS for n in names},
        "champions": champions_columns(names),
        "forecasts": FORECASTS,
        "risk_exceptions": RISK_EXCEPTIONS_STORED,
        "capacity_plan": CAPACITY_PLAN,
        "forecast_history": FORECAST_HISTORY,
        "risk_history": RISK_HISTORY,
        "forecast_accuracy": FORECAST_ACCURACY,
        "risk_calls": RISK_CALL_OUTCOMES,
        "risk_resolved": RISK_RESOLVED,
        "scenario_forecasts": SCENARIO_FORECASTS,
        "scenario_risk": SCENARIO_RISK,
        "scenario_plan": SCENARIO_PLAN,
        "pool_outlook": POOL_OUTLOOK,
        "pool_demand": POOL_DEMAND,
        "batch_ledger": BATCH_LEDGER,
    }


# the type a contract dtype is stored as (DuckDB's names; PostgreSQL's are the equivalents)
SQL_TYPES = {
    "string": "VARCHAR",
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "int64": "BIGINT",
    "Int64": "BIGINT",  # a whole number that may be empty
    "bool": "BOOLEAN",
    "datetime64[ns]": "DATE",
    TIMESTAMP: "TIMESTAMP_NS",  # naive UTC, as pandas hands it over
}

# what each column means (README's outputs table in short); TABLE_COLUMN_DOCS where a table differs
COLUMN_DOCS = {
    "batch": "server batch (partition key): md5 of server_id, stable as servers come and go",
    "server_id": "the server, exactly as the metrics name it",
    "resource": "cpu, memory, disk or network",
    "department": "the server's department from the hierarchy (Unassigned when missing)",
    "app_manager": "the server's app manager from the hierarchy (Unassigned when missing)",
    "ds": "the day (UTC)",
    "y": "daily utilisation, % (0-100; CAPACITY_DAILY_AGG of the samples)",
    "filled": "the day was interpolated over a gap, not measured",
    "first_ds": "first day with data",
    "last_ds": "last day with data",
    "days": "measured (not gap-filled) days",
    "reason": "why the series is not forecast",
    "yhat": "forecast utilisation, % (clipped to 0-100)",
    "yhat_lower": "lower bound of the CAPACITY_INTERVAL prediction interval, %",
    "yhat_upper": "upper bound of the CAPACITY_INTERVAL prediction interval, %",
    "split": "backtest (fit on all but the last CAPACITY_BACKTEST_MONTHS), window (a fit from a "
    "later origin, also forecasting to the end of history) or future",
    "origin": "last day of the data the fit that made the row saw (future: the last history day)",
    "model": "the model that made the forecast (':fallback': seasonal naive where it could not fit)",
    "demand": "forecast before clipping to 100 %: what the workload would use if it could",
    "demand_upper": "upper bound before clipping: what capacity is sized on",
    "champion": "the contender with the lowest MAPE pooled over the backtest and the windows (a "
    "fitted contender must beat the combination's by 10 %)",
    "champion_mape": "the champion's backtest MAPE, %",
    "trust": "high, medium or low: could the backtest error move the call across the threshold",
    "run_id": "the Dagster run that made it",
    "generated_at": "when the forecast was made (UTC)",
    "first_breach_date": "first day the upper bound reaches the threshold",
    "days_to_breach": "days from the first forecast day to the first breach (0: already there)",
    "peak_upper": "highest upper bound in the risk window, %",
    "peak_yhat": "highest forecast in the risk window, %",
    "severity": "critical (the forecast itself crosses) or warning (only its upper bound)",
    "threshold": "the saturation threshold the series was judged against, %",
    "status": "new (not flagged in the previous vintage) or ongoing",
    "first_flagged": "vintage since which the series has been flagged without a break",
    "target": "the utilisation the plan sizes to, %",
    "peak_demand_upper": "highest unclipped upper demand over the horizon, %",
    "needed_by": "first crossing minus CAPACITY_LEAD_DAYS (an add's order date)",
    "action": "add, reclaim or none",
    "change_pct": "capacity change that puts the peak upper demand at the target, %",
    "change_units": "change_pct in the hierarchy's size (empty without one)",
    "unit": "cores, GB or Gbps",
    "review": "a low-trust forecast drives an add or reclaim: a person should look",
    "vintage": "first forecast day of the run that made the vintage",
    "horizon_bucket": "days ahead: 1-7, 8-30, 31-90, 91-180 or all",
    "days_scored": "days with a measured actual in the bucket",
    "mape": "mean absolute percentage error, % (5-point floor on the actual)",
    "wape": "weighted absolute percentage error, %",
    "bias": "mean of forecast minus actual, points (positive: over-forecast)",
    "band_coverage": "share of actuals inside the bounds",
    "flagged": "the vintage flagged the series at risk",
    "crossed": "a measured actual in the risk window reached the threshold",
    "first_crossed": "first day a measured actual reached the threshold",
    "window_end": "last day of the risk window",
    "days_measured": "measured days in the risk window (0: not scored)",
    "last_flagged": "last vintage that flagged the series",
    "resolved_in": "vintage in which it was no longer flagged",
    "threshold_before": "threshold when last flagged, %",
    "threshold_now": "threshold now, %",
    "fingerprint": "hash of what the results were made from: inputs, hierarchy, settings, code, libraries",
    "published_at": "when the batch was published (UTC)",
    "series": "series in the batch's golden record",
    "rows": "rows in the batch's golden record",
    "code_version": "hash of the package's code that made the results",
    "settings": "JSON of the settings that change results",
    "hierarchy_version": "content hash of the hierarchy the owners came from",
    "scenario": "the what-if scenario (its name in CAPACITY_SCENARIOS)",
    "baseline_first_breach_date": "first breach in risk_exceptions (empty: only this scenario)",
    "days_moved": "scenario's first breach minus the baseline's, days (negative: sooner)",
    "pool": "the server's pool from the hierarchy's pool column (a cluster, application, array)",
    "servers": "the pool's servers with a forecast of the resource",
    "servers_without_size": "of those, servers without a size in the hierarchy (not in the units)",
    "capacity_units": "installed capacity of the pool's sized servers (first day / that day)",
    "threshold_units": "capacity_units times the threshold: where the pool saturates",
    "peak_demand_units": "highest forecast demand of the pool over the horizon, in units",
    "peak_demand_upper_units": "highest upper demand of the pool over the horizon, in units",
    "headroom_units": "smallest threshold_units minus upper demand of any day (negative: short)",
    "forecast_breach_date": "first day the forecast demand itself reaches the threshold",
    "median_server_units": "median of the pool's servers' own peak upper demand, in units",
    "servers_that_fit": "more servers of median_server_units that fit in the headroom",
    "demand_units": "forecast demand (unclipped) of the pool's sized servers that day, in units",
    "demand_upper_units": "upper demand (unclipped) of the pool's sized servers that day, in units",
}
TABLE_COLUMN_DOCS = {
    ("risk_calls", "status"): "so_far until the data reaches the window's last day, then final",
    ("risk_resolved", "reason"): "forecast fell, left the fleet or threshold changed",
    ("forecast_history", "yhat"): "forecast utilisation, % (0.01-point precision)",
    ("pool_outlook", "scenario"): "the what-if scenario; empty for the published golden record",
    ("pool_demand", "scenario"): "the what-if scenario; empty for the published golden record",
    ("pool_outlook", "threshold"): "the pool's threshold, % (CAPACITY_THRESHOLD[_RESOURCE])",
    ("pool_outlook", "first_breach_date"): "first day its upper demand reaches threshold_units",
    ("pool_outlook", "days_to_breach"): "days from the pool's first forecast day to that breach",
    ("champions", "windows"): "origins whose errors the pick pooled (1: the backtest alone; 0: "
    "the champion was not scored)",
}
# per-contender columns of champions: '<contender>_<metric>'
_CONTENDER_DOCS = {
    "mape": "{}'s backtest MAPE, %",
    "wape": "{}'s backtest WAPE, %",
    "mae": "{}'s backtest mean absolute error, points",
    "coverage": "share of {}'s backtest actuals inside its bounds",
    "model": "the model {} used (':fallback' where it could not fit)",
}


def describe(table: str, column: str) -> str:
    """What ``column`` of ``table`` means, for the catalog; every contract column has an answer."""
    if (table, column) in TABLE_COLUMN_DOCS:
        return TABLE_COLUMN_DOCS[(table, column)]
    if column in COLUMN_DOCS:
        return COLUMN_DOCS[column]
    if table == "champions" and column.endswith("_pooled_mape"):
        return (
            f"{column.removesuffix('_pooled_mape')}'s MAPE over the days of every origin pooled "
            "(the backtest's and the windows'): what the pick compares, %"
        )
    contender, _, metric = column.rpartition("_")
    if table == "champions" and metric in _CONTENDER_DOCS:
        return _CONTENDER_DOCS[metric].format(contender)
    raise KeyError(f"schema.py describes no column {column!r} of {table!r}: add it to COLUMN_DOCS")
