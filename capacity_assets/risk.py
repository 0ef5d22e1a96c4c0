"""Capacity risk: which series cross the threshold soon, and who owns them.

Pure pandas (no Dagster). Definitions:

* window: forecast days 1..``risk_days`` where day 1 is the day after the last history day (with
  the default 90, day 90 is in and day 91 out).
* at risk: ``yhat_upper >= threshold`` on any day in the window. ``>=`` because "95 % is the limit"
  means reaching it is already the problem, and forecasts are clipped at 100 (``>`` 100 could never fire).
* severity 'critical' when ``yhat`` itself reaches the threshold in the window (the expected path
  crosses), 'warning' when only the upper bound does (plausible, not expected).
* already above: the mean of the last 7 observed (not gap-filled) days up to the last history day
  is ``>= threshold``. The mean rather than the max, so that one backup spike does not page anyone
  while a saturated week does. Reported as critical with days_to_breach 0 and first_breach_date =
  last history day, whatever the forecast says. Only series with a forecast are considered: a
  skipped series may be stale or decommissioned.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.schema import DATE_COLUMNS, FORECASTS, RISK_EXCEPTIONS, conform

UNASSIGNED = "Unassigned"
HIERARCHY_REQUIRED = ["server_id", "department", "app_manager"]
SEVERITY_ORDER = {"critical": 0, "warning": 1}
KEY = ["batch", "server_id", "resource"]
LAST_WEEK_DAYS = 7
# names an extra hierarchy column may not take: every pipeline column and every date column
RESERVED_COLUMNS = {*FORECASTS, *RISK_EXCEPTIONS, *DATE_COLUMNS, "y", "split", "filled"}


def hierarchy_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Normalised hierarchy (server_id, department, app_manager, then extra columns as given) and
    human-readable issues. Header names are matched ignoring case and surrounding blanks, because
    the file comes from a spreadsheet export. Conflicting duplicate server_ids keep the first row:
    the file order is the owner's, and a stable rule beats a guess."""
    rename = {c: str(c).strip().lower() for c in df.columns if str(c).strip().lower() in HIERARCHY_REQUIRED}
    rename.update({c: str(c).strip() for c in df.columns if c not in rename})
    df = df.rename(columns=rename)
    missing = [c for c in HIERARCHY_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"hierarchy is missing required columns {missing}; found {list(df.columns)}")
    extra = [c for c in df.columns if c not in HIERARCHY_REQUIRED]
    out = df[HIERARCHY_REQUIRED + extra].copy()
    # an extra column named like a pipeline column (a CMDB's hardware 'model', a 'resource' tag)
    # would collide in risk_exceptions: keep it, under a prefixed name
    clash = {c: f"hierarchy_{c}" for c in extra if c in RESERVED_COLUMNS}
    out = out.rename(columns=clash)
    for c in HIERARCHY_REQUIRED:
        s = out[c].astype("string").str.strip()
        out[c] = s.mask(s.isna() | s.eq(""), UNASSIGNED if c != "server_id" else pd.NA)
    issues: list[str] = [f"hierarchy column {c!r} is named like a pipeline column: kept as {n!r}"
                         for c, n in clash.items()]
    no_id = out["server_id"].isna()
    if no_id.any():
        issues.append(f"{int(no_id.sum())} hierarchy rows without server_id dropped")
    out = out[~no_id].drop_duplicates()
    dup = out[out["server_id"].duplicated(keep=False)]
    if len(dup):
        servers = list(dict.fromkeys(dup["server_id"]))
        first = dup[dup["server_id"] == servers[0]]
        cols = [c for c in out.columns if c != "server_id" and first[c].astype("string").nunique(dropna=False) > 1]
        vals = "; ".join(f"{c}: " + " vs ".join(map(repr, first[c].astype(str).tolist())) for c in cols)
        issues.append(f"{len(servers)} server_id(s) with conflicting hierarchy rows, kept the first of each; "
                      f"first: {servers[0]!r} ({vals})")
    out = out.drop_duplicates("server_id", keep="first").reset_index(drop=True)
    return out, issues


def _history_end(forecasts: pd.DataFrame, actuals: pd.DataFrame) -> pd.DataFrame:
    """Last history day per series: the actuals' last day, else the day before the first forecast."""
    first_fc = forecasts.groupby(KEY, as_index=False)["ds"].min()
    first_fc["history_end"] = first_fc.pop("ds") - pd.Timedelta(days=1)
    last_act = actuals.groupby(KEY, as_index=False)["ds"].max().rename(columns={"ds": "act_end"})
    out = first_fc.merge(last_act, on=KEY, how="left")
    out["history_end"] = out["act_end"].fillna(out["history_end"])
    return out.drop(columns="act_end")


def _last_week_mean(actuals: pd.DataFrame, ends: pd.DataFrame) -> pd.DataFrame:
    a = actuals.merge(ends, on=KEY, how="inner")
    a = a[(a["ds"] <= a["history_end"]) & (a["ds"] > a["history_end"] - pd.Timedelta(days=LAST_WEEK_DAYS))]
    if "filled" in a.columns:
        a = a[~a["filled"].fillna(False).astype(bool)]
    return a.groupby(KEY, as_index=False)["y"].mean().rename(columns={"y": "last_week_mean"})


def _breaches(forecasts: pd.DataFrame, actuals: pd.DataFrame, threshold: float, risk_days: int) -> pd.DataFrame:
    ends = _history_end(forecasts, actuals)
    f = forecasts.merge(ends, on=KEY, how="inner")
    day = (f["ds"] - f["history_end"]).dt.days
    f = f[(day >= 1) & (day <= risk_days)].sort_values(KEY + ["ds"])
    g = f.groupby(KEY)
    out = pd.DataFrame({
        "peak_upper": g["yhat_upper"].max(), "peak_yhat": g["yhat"].max(),
        "first_breach_date": f[f["yhat_upper"] >= threshold].groupby(KEY)["ds"].min(),
        "model": g["model"].first(), "champion_mape": g["champion_mape"].first(), "trust": g["trust"].first(),
    }).reset_index().merge(ends, on=KEY, how="left")
    out = out.merge(_last_week_mean(actuals, ends), on=KEY, how="left")
    already = out["last_week_mean"] >= threshold
    ahead = out["first_breach_date"].notna()
    out = out[already | ahead].copy()
    already = already[out.index]
    out["severity"] = np.where(already | (out["peak_yhat"] >= threshold), "critical", "warning")
    out["first_breach_date"] = out["first_breach_date"].where(~already, out["history_end"])
    out["days_to_breach"] = (out["first_breach_date"] - out["history_end"]).dt.days.astype("int64")
    return out


def risk_exceptions(forecasts: pd.DataFrame, hierarchy: pd.DataFrame, actuals: pd.DataFrame,
                    threshold: float = 95.0, risk_days: int = 90) -> pd.DataFrame:
    """One row per series at risk (RISK_EXCEPTIONS, extra hierarchy columns after), most urgent first.
    Servers missing from the hierarchy are kept, owned by 'Unassigned': an unowned risk is still a risk."""
    hier, _ = hierarchy_table(hierarchy)
    risk = _breaches(forecasts, actuals, threshold, risk_days)
    risk = risk.merge(hier, on="server_id", how="left")
    for c in ("department", "app_manager"):
        risk[c] = risk[c].fillna(UNASSIGNED)
    risk = sort_risk(risk)
    extra = [c for c in hier.columns if c not in HIERARCHY_REQUIRED]
    return conform(risk[list(RISK_EXCEPTIONS) + extra], RISK_EXCEPTIONS, extra=True)


def sort_risk(risk: pd.DataFrame) -> pd.DataFrame:
    """Critical first, then soonest, then by name so reruns produce identical files."""
    order = risk["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    return (risk.assign(_sev=order).sort_values(["_sev", "days_to_breach", "server_id", "resource"], kind="stable")
            .drop(columns="_sev").reset_index(drop=True))
