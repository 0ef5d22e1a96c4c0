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
ENGINE_RESULTS = {**RAW_RESULTS, "model": "string", "demand": "float64", "demand_upper": "float64"}
MODEL_RESULTS = {"batch": "string", **ENGINE_RESULTS}

# table name -> columns that are DATEs (stored as DATE, not TIMESTAMP)
DATE_COLUMNS = (
    "ds",
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
