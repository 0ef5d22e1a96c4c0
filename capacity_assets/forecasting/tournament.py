"""The tournament: score every contender's backtest, crown one champion per series, publish its future.

Pure pandas (no Dagster) so the rules can be tested with hand-made numbers; the assets only wire
them up. All errors are in percentage points of utilisation (y is 0..100).

Metrics, per series and contender, over backtest days with an actual (gap-filled days excluded,
they are our own interpolation, not a measurement):

* MAPE = mean(|y - yhat| / max(|y|, MAPE_FLOOR)) * 100. Plain MAPE divides by y and explodes on
  idle series (a NIC at 0.3 % forecast at 0.6 % is "100 % wrong" though nobody cares): below
  MAPE_FLOOR percentage points the error counts relative to the floor instead, so a 0.3 pp miss on
  an idle series is a 6 % error, while busy series (where capacity matters) keep the plain MAPE.
* WAPE = sum|y - yhat| / sum|y| * 100 (NaN when every actual is 0).
* MAE in percentage points.
* coverage = share (0..1) of days with yhat_lower <= y <= yhat_upper; compare with the nominal
  interval (ForecastConfig.interval, 0.80).
* err_p90 = 90th percentile of |y - yhat| in percentage points: how far off the forecast was on
  its worse days.

Trust, per series (``champions``), with a saturation ``threshold`` (the pipeline's 95, or one per
series) and a risk window of ``risk_days``:

* ``low`` when the champion's backtest error could move the series across the threshold within
  the risk window: ``|peak - threshold| <= err_p90``, with ``peak`` the champion's highest
  unclipped forecast (``demand``) in the window. The risk call (at risk or not) then rests on a
  forecast that is off by that much on one day in ten. Also ``low`` when the champion is unscored.
* otherwise ``high`` when champion MAPE <= ``trust_high`` (10) and ``medium`` above it, however
  large: an idle link forecast at 12 % with MAPE 30 is off by 3-4 points, which cannot change a
  95 % call. MAPE stays what the bad-MAPE check (``CAPACITY_MAPE_WARN``) flags.

Without a threshold (``threshold=None``, the default for existing callers) trust is the MAPE rule
alone (``trust_level``): high <= 10, medium <= ``trust_medium``, else low.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.forecasting import golden_bands, windows
from capacity_assets.forecasting.engines.base import on_days_of, with_origin
from capacity_assets.forecasting.engines.registry import CONTENDERS, TOURNAMENT
from capacity_assets.forecasting.windows import MAPE_FLOOR  # see module docstring
from capacity_assets.schema import BATCH_SERIES_KEY as KEY
from capacity_assets.schema import FORECASTS, champions_columns, conform, escape_markdown

UPPER_RULES = ("champion", "consensus", "calibrated")  # golden_record's bounds
TRUST_HIGH = 10.0  # champion MAPE <= this: 'high'
TRUST_MEDIUM = 20.0  # <= this: 'medium' (CAPACITY_MAPE_WARN default); above or unscored: 'low'
RISK_DAYS = 90  # risk window of the capacity trust rule (CAPACITY_RISK_DAYS)
ERROR_QUANTILE = 0.9  # err_p90: the backtest error the capacity trust rule weighs against headroom
# a fitted contender beats the combination only with a pooled MAPE this share lower: picking one
# contender on a few months' errors is noisier than averaging them (chosen on the demo family,
# issue 26, benchmarks/README.md). The combination's weights are learnt on the days it is scored
# on, so it is nearly always within this of its best member: in effect it wins almost everywhere
# (99 % of series at 2,000 servers), which is what the held-out months favoured
COMBINATION_MARGIN = 0.10

SCORE_COLUMNS = KEY + ["contender", "model", "mape", "wape", "mae", "coverage", "n_days", "err_p90"]


def contender_order(names) -> list[str]:
    """Registry order first (it decides ties), then any unregistered names as given."""
    names = list(names)
    return [n for n in TOURNAMENT if n in names] + [n for n in names if n not in TOURNAMENT]


def series_metrics(y: np.ndarray, yhat: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict:
    err = np.abs(y - yhat)
    if len(y) == 0:
        return {
            "mape": np.nan,
            "wape": np.nan,
            "mae": np.nan,
            "coverage": np.nan,
            "n_days": 0,
            "err_p90": np.nan,
        }
    total = np.abs(y).sum()
    return {
        "mape": float(np.mean(err / np.maximum(np.abs(y), MAPE_FLOOR)) * 100),
        "wape": float(err.sum() / total * 100) if total > 0 else np.nan,
        "mae": float(err.mean()),
        "coverage": float(np.mean((y >= lower) & (y <= upper))),
        "n_days": int(len(y)),
        "err_p90": float(np.quantile(err, ERROR_QUANTILE)),
    }


def _grouped_metrics(joined: pd.DataFrame) -> pd.DataFrame:
    """series_metrics for every series at once (vectorised: fleets have tens of thousands)."""
    y, yhat = joined["y"].to_numpy(float), joined["yhat"].to_numpy(float)
    err = np.abs(y - yhat)
    parts = joined[KEY].assign(
        ape=err / np.maximum(np.abs(y), MAPE_FLOOR),
        err=err,
        absy=np.abs(y),
        inside=(
            (y >= joined["yhat_lower"].to_numpy(float))
            & (y <= joined["yhat_upper"].to_numpy(float))
        ).astype(float),
    )
    g = parts.groupby(KEY, sort=True, observed=True)
    m = g.agg(
        mape=("ape", "mean"),
        mae=("err", "mean"),
        err_sum=("err", "sum"),
        y_sum=("absy", "sum"),
        coverage=("inside", "mean"),
        n_days=("err", "size"),
    )
    m["mape"] *= 100
    m["wape"] = (m["err_sum"] / m["y_sum"] * 100).where(m["y_sum"] > 0)
    m["err_p90"] = g["err"].quantile(ERROR_QUANTILE)
    return m.reset_index()[KEY + ["mape", "wape", "mae", "coverage", "n_days", "err_p90"]].astype(
        {"n_days": float}
    )


def _model_label(results: pd.DataFrame) -> pd.DataFrame:
    """Label per series as published: the future rows' (they are what users see), else backtest's."""
    r = results.assign(_fut=results["split"].eq("future")).sort_values(
        "_fut", ascending=False, kind="stable"
    )
    return r.drop_duplicates(KEY)[KEY + ["model"]]


def _score_one(name: str, results: pd.DataFrame, actuals: pd.DataFrame) -> pd.DataFrame:
    bt = results[results["split"] == "backtest"]
    act = windows.measured(actuals)
    joined = bt.merge(on_days_of(act, bt)[KEY + ["ds", "y"]], on=KEY + ["ds"], how="inner")
    joined = joined.dropna(subset=["y", "yhat"])
    metrics = _grouped_metrics(joined)
    # every series the contender produced appears, scored or not (NaN metrics, n_days 0)
    out = _model_label(results).merge(metrics, on=KEY, how="left")
    out["n_days"] = out["n_days"].fillna(0).astype("int64")
    out["contender"] = name
    return out[SCORE_COLUMNS]


def score(results_by_model: dict[str, pd.DataFrame], actuals: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per series and contender (columns SCORE_COLUMNS)."""
    parts = [_score_one(n, results_by_model[n], actuals) for n in contender_order(results_by_model)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    return (
        pd.concat(parts, ignore_index=True)
        .sort_values(KEY + ["contender"], kind="stable")
        .reset_index(drop=True)
    )


def trust_level(
    mape: pd.Series, high: float = TRUST_HIGH, medium: float = TRUST_MEDIUM
) -> pd.Series:
    """The MAPE-only rule. Unscored (NaN) is 'low': an accuracy we could not measure is not one to trust."""
    return pd.Series(
        np.select([mape <= high, mape <= medium], ["high", "medium"], "low"), index=mape.index
    )


def capacity_trust(mape, err_p90, peak, threshold, high: float = TRUST_HIGH) -> np.ndarray:
    """The capacity rule (module docstring): 'low' when ``|peak - threshold| <= err_p90`` (the
    backtest error could carry the series across the threshold) or unscored; else 'high' when
    MAPE <= ``high``, else 'medium'. Arguments are numbers or aligned arrays (percentage points)."""
    mape, err, peak, thr = (np.asarray(v, float) for v in (mape, err_p90, peak, threshold))
    near = np.abs(peak - thr) <= err
    unscored = ~np.isfinite(mape) | ~np.isfinite(err) | ~np.isfinite(peak)
    return np.where(unscored | near, "low", np.where(mape <= high, "high", "medium"))


def series_thresholds(threshold, index: pd.MultiIndex) -> np.ndarray:
    """One threshold per series of ``index`` (batch, server_id, resource) from a number, a Series
    keyed by (server_id, resource) or a frame with server_id, resource, threshold."""
    if np.isscalar(threshold):
        return np.full(len(index), float(threshold))
    if isinstance(threshold, pd.DataFrame):
        threshold = threshold.set_index(["server_id", "resource"])["threshold"]
    series = threshold.groupby(
        level=[-2, -1]
    ).first()  # (server_id, resource), batch dropped if any
    keys = pd.MultiIndex.from_arrays(
        [index.get_level_values("server_id"), index.get_level_values("resource")]
    )
    out = series.reindex(keys).to_numpy(float)
    if np.isnan(out).any():
        missing = keys[np.isnan(out)][:5].tolist()
        raise ValueError(f"no threshold for {int(np.isnan(out).sum())} series, e.g. {missing}")
    return out


def _peak_demand(
    results_by_model: dict[str, pd.DataFrame], champion: pd.Series, risk_days: int
) -> pd.Series:
    """Per series, the champion's highest unclipped forecast in days 1..risk_days of its future."""
    parts = []
    for name in champion.unique():
        res = results_by_model.get(name)
        if res is None or res.empty:
            continue
        fut = res.loc[
            res["split"] == "future", KEY + ["ds", "demand" if "demand" in res.columns else "yhat"]
        ]
        fut = fut.rename(columns={"yhat": "demand"})
        fut = fut.merge(champion[champion == name].rename("champion").reset_index()[KEY], on=KEY)
        day = (fut["ds"] - fut.groupby(KEY)["ds"].transform("min")).dt.days + 1
        parts.append(fut[day <= risk_days].groupby(KEY)["demand"].max())
    peak = pd.concat(parts) if parts else pd.Series(dtype=float)
    return peak.reindex(champion.index)


def champions(
    results_by_model: dict[str, pd.DataFrame],
    actuals: pd.DataFrame,
    trust_high: float = TRUST_HIGH,
    trust_medium: float = TRUST_MEDIUM,
    threshold=None,
    risk_days: int = RISK_DAYS,
) -> pd.DataFrame:
    """One row per series: every contender's scores side by side and the winner.

    Lower MAPE over the days of every origin pooled wins (``windows``: the backtest's and the
    windows'; the backtest's alone when there are no window rows), ``champion_mape`` staying the
    champion's backtest MAPE, except that a fitted contender beats the combination only when its
    pooled MAPE is ``COMBINATION_MARGIN`` (10 %) lower than the combination's; a tie goes to the earlier contender in registry order (prophet); an unscored
    contender (NaN) loses to a scored one; a contender without future rows can't win (it has
    nothing to publish) unless no one has any. Every fitted contender of the registry (``CONTENDERS``)
    has its columns, results passed or not (a stable table); a combiner's only when passed.

    ``threshold`` (a number, a Series keyed by (server_id, resource), or a frame with server_id,
    resource, threshold) switches trust to the capacity rule of the module docstring, over the
    first ``risk_days`` forecast days; ``None`` keeps the MAPE rule (``trust_high``/``trust_medium``).
    """
    names = contender_order(list(CONTENDERS) + [n for n in results_by_model if n not in CONTENDERS])
    columns = champions_columns(names)
    scores = score(results_by_model, actuals)
    if scores.empty:
        return conform(pd.DataFrame(columns=list(columns)), columns)
    wide = scores.pivot(
        index=KEY,
        columns="contender",
        values=["mape", "wape", "mae", "coverage", "model", "err_p90"],
    )
    out = pd.DataFrame(index=wide.index)
    for n in names:
        for m in ("mape", "wape", "mae", "coverage", "model"):
            out[f"{n}_{m}"] = wide[(m, n)] if (m, n) in wide.columns else np.nan
    has_future = pd.DataFrame(
        {
            n: _has_future(results_by_model[n], out.index)
            if n in results_by_model
            else pd.Series(False, index=out.index)
            for n in names
        },
        index=out.index,
    )
    # the pick compares MAPE pooled over every origin (the backtest's days alone without windows);
    # unscored -> just below +inf (loses to any score), no future rows -> +inf (loses to everyone);
    # argmin keeps the first column on ties, i.e. registry order
    mape = pd.DataFrame({n: out[f"{n}_mape"].astype(float) for n in names}, index=out.index)
    pooled_mape, origins = windows.pooled(results_by_model, actuals, KEY)
    pooled_mape = pooled_mape.reindex(index=out.index, columns=names).astype(float)
    rank = pooled_mape.fillna(np.finfo(float).max).where(has_future, np.inf)
    for n in names:
        if n not in CONTENDERS:  # a combiner: the fitted contenders must beat it by the margin
            scored = pooled_mape[n].notna() & has_future[n]
            rank[n] = rank[n].where(~scored, rank[n] * (1 - COMBINATION_MARGIN))
    best = rank.to_numpy().argmin(axis=1)  # first minimum on ties
    out["champion"] = np.asarray(names, dtype=object)[best]
    out["champion_mape"] = mape.to_numpy()[np.arange(len(out)), best]
    counts = origins.reindex(index=out.index, columns=names).fillna(0).to_numpy()
    out["windows"] = counts[np.arange(len(out)), best].astype("int64")
    for n in names:
        out[f"{n}_pooled_mape"] = pooled_mape[n]
    if threshold is None:
        out["trust"] = trust_level(out["champion_mape"], trust_high, trust_medium)
    else:
        err = pd.DataFrame(
            {
                n: wide[("err_p90", n)].astype(float) if ("err_p90", n) in wide.columns else np.nan
                for n in names
            },
            index=out.index,
        ).to_numpy()[np.arange(len(out)), best]
        peak = _peak_demand(results_by_model, out["champion"], risk_days).to_numpy(float)
        out["trust"] = capacity_trust(
            out["champion_mape"], err, peak, series_thresholds(threshold, out.index), trust_high
        )
    return conform(out.reset_index(), columns)


def _has_future(results: pd.DataFrame, index: pd.MultiIndex) -> pd.Series:
    fut = results.loc[results["split"] == "future", KEY].drop_duplicates()
    keys = set(map(tuple, fut.to_numpy().tolist()))
    return pd.Series([k in keys for k in index], index=index, dtype=bool)


def golden_record(
    results_by_model: dict[str, pd.DataFrame],
    champions: pd.DataFrame,
    generated_at: pd.Timestamp,
    run_id: str,
    upper: str = "champion",
    actuals: pd.DataFrame | None = None,
    interval: float = 0.80,
) -> pd.DataFrame:
    """The champion's future rows: what every report and dashboard reads (FORECASTS).

    ``upper="champion"`` publishes them untouched. ``upper="calibrated"`` rescales both bounds on
    the champions' own out-of-sample errors from every origin, per horizon (``golden_bands``; needs
    ``actuals`` and the central ``interval``): measured for issue 26, it covered less than the
    consensus on the held-out family and raised more false alarms on the tuning one, so the
    pipeline publishes the consensus. ``upper="consensus"`` caps the upper bound (the
    one that decides risk, ``yhat_upper >= threshold``) at the median of every fitted contender's
    upper bound that day, never below ``yhat``: the champion keeps its forecast and its lower bound, but
    one contender's blown-up band (a lucky backtest, a wild calibration factor) cannot raise an
    alarm that most contenders do not see. It removed false alarms at the same recall on the
    tuning fleet (``benchmarks/README.md``). ``demand_upper`` is capped alike.
    """
    if upper not in UPPER_RULES:
        raise ValueError(f"upper must be one of {', '.join(UPPER_RULES)}, not {upper!r}")
    if upper == "calibrated" and actuals is None:
        raise ValueError("upper='calibrated' needs the actuals its errors are measured on")
    meta = champions[KEY + ["champion", "champion_mape", "trust"]]
    parts = []
    for name in contender_order(results_by_model):
        fut = results_by_model[name]
        fut = with_origin(fut[fut["split"] == "future"])
        parts.append(fut.merge(meta[meta["champion"] == name], on=KEY, how="inner"))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(FORECASTS))
    if upper == "consensus" and len(out):
        out = _consensus_upper(out, results_by_model)
    if upper == "calibrated" and len(out):
        out = golden_bands.calibrate(out, results_by_model, actuals, interval)
    ts = pd.Timestamp(generated_at)
    ts = ts.tz_convert("UTC").tz_localize(None) if ts.tz is not None else ts  # stored naive, in UTC
    out = conform(
        out.assign(run_id=run_id, generated_at=ts).sort_values(KEY + ["ds"], kind="stable"),
        FORECASTS,
    )
    # conform normalises every datetime to midnight; generated_at is a timestamp, keep its time
    out["generated_at"] = pd.Series(ts, index=out.index, dtype="datetime64[ns]")
    return out


def _consensus_upper(
    golden: pd.DataFrame, results_by_model: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    cols = ["yhat_upper", "demand_upper"]
    # the fitted contenders' bounds: a combination is made of them, counting it would count its
    # members twice (issue 26: one fewer false alarm on the demo family)
    voters = [n for n in results_by_model if n in CONTENDERS] or list(results_by_model)
    fut = pd.concat(
        [
            r.loc[r["split"] == "future", KEY + ["ds"] + cols]
            for n, r in results_by_model.items()
            if n in voters and r is not None and len(r)
        ],
        ignore_index=True,
    )
    median = (
        fut.groupby(KEY + ["ds"], sort=False)[cols].median().add_prefix("median_").reset_index()
    )
    out = golden.merge(median, on=KEY + ["ds"], how="left")
    for c in cols:
        base = "yhat" if c == "yhat_upper" else "demand"
        capped = np.minimum(out[c], out[f"median_{c}"].fillna(out[c]))
        out[c] = np.maximum(capped, out[base])
    return out.drop(columns=[f"median_{c}" for c in cols])


# --- summaries for asset metadata ------------------------------------------------------------------


def wins(champions: pd.DataFrame) -> dict[str, int]:
    counts = champions["champion"].value_counts()
    names = contender_order(
        [
            c[:-5]
            for c in champions.columns
            if c.endswith("_mape") and c != "champion_mape" and not c.endswith("_pooled_mape")
        ]
    )
    return {n: int(counts.get(n, 0)) for n in names}


def median_champion_mape(champions: pd.DataFrame) -> float | None:
    m = champions["champion_mape"].astype(float).median()
    return None if pd.isna(m) else round(float(m), 2)


def markdown_preview(df: pd.DataFrame, n: int = 10, digits: int = 2) -> str:
    """First ``n`` rows as a markdown table (no tabulate dependency)."""
    head = df.head(n)

    def cell(v) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        if isinstance(v, pd.Timestamp):
            return v.strftime("%Y-%m-%d") if v == v.normalize() else v.isoformat()
        return escape_markdown(v)

    lines = ["| " + " | ".join(map(str, head.columns)) + " |", "|" + "---|" * len(head.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in head.itertuples(index=False)
    ]
    return "\n".join(lines)
