"""What a data scientist would write without Dagster: one script, one series at a time, two processes.

    python benchmarks/seed_style.py --metrics 'fleet/metrics/*.parquet' [--processes 2] [--out seed_forecasts.parquet]

The yardstick for `capacity run` (see benchmarks/versus_seed.py). Per series (server x resource):

* daily mean of the samples; series shorter than 10 months (4 to backtest + 6 to train) are skipped,
  the same rule as the pipeline's skipped_series, so both forecast the same series;
* stock ``prophet.Prophet()`` fitted on everything but the last 4 months (32 of 36 months), one
  ``predict`` over the 4 backtest months and the 180 days after the last day (stock uncertainty
  intervals, 80 %);
* stock ``xgboost.XGBRegressor()`` per series on calendar features (day of week, day of month,
  month, day of year, week of year, a day counter) and yearly lags (364 and 371 days, and the
  28-day mean ending 364 days back: lags that reach over the whole 300 days to predict, so no
  recursion is needed), fitted on the same 32 months; bounds from the 10th/90th percentiles of
  its in-sample residuals;
* the model with the lower backtest MAPE (``|y - yhat| / max(|y|, 5)``, as in the pipeline) wins,
  and its future rows (from the 32-month fit: no refit) are the forecast.

``multiprocessing.Pool(processes)`` maps that function over the series. ``n_jobs=1`` for XGBoost,
because the pool already has one process per core. No database, no orchestration, no staging,
no risk list: only the forecasts, written to one Parquet file.

``XGBRegressor`` needs scikit-learn, which the project does not install (xgboost imports it at import
time whenever it is importable, which would slow every pipeline process). Install it for this script
only, into the git-ignored benchmarks/out/seed_deps, which the script appends to ``sys.path``:

    .venv/bin/pip install --target benchmarks/out/seed_deps --no-deps scikit-learn joblib
"""

from __future__ import annotations

import argparse
import glob
import logging
import multiprocessing
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DEPS = Path(__file__).resolve().parent / "out" / "seed_deps"
if DEPS.is_dir():
    sys.path.append(str(DEPS))

BACKTEST_MONTHS = 4
MIN_TRAIN_MONTHS = 6
HORIZON_DAYS = 180
LAGS = (364, 371)


def load(metrics: str) -> pd.DataFrame:
    files = sorted(glob.glob(metrics)) or [metrics]
    raw = pd.concat(
        [pd.read_csv(f) if f.endswith(".csv") else pd.read_parquet(f) for f in files],
        ignore_index=True,
    )
    raw["ds"] = pd.to_datetime(raw["timestamp"]).dt.tz_localize(None).dt.normalize()
    raw["resource"] = raw["resource"].str.lower()
    return (
        raw.groupby(["server_id", "resource", "ds"], as_index=False)["utilization_pct"]
        .mean()
        .rename(columns={"utilization_pct": "y"})
    )


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(y - yhat) / np.maximum(np.abs(y), 5.0)) * 100)


def features(ds: pd.DatetimeIndex, y: pd.Series, start: pd.Timestamp) -> pd.DataFrame:
    """Calendar features and yearly lags of ``y`` (indexed by day) for the days ``ds``."""
    X = pd.DataFrame(
        {
            "dow": ds.dayofweek,
            "dom": ds.day,
            "month": ds.month,
            "doy": ds.dayofyear,
            "woy": ds.isocalendar().week.to_numpy().astype(int),
            "t": (ds - start).days,
        },
        index=ds,
    )
    for lag in LAGS:
        X[f"lag{lag}"] = y.reindex(ds - pd.Timedelta(days=lag)).to_numpy()
    X["mean28_364"] = y.rolling("28D").mean().reindex(ds - pd.Timedelta(days=364)).to_numpy()
    return X


def forecast_one(item):
    (server_id, resource), s = item
    from prophet import Prophet
    from xgboost import XGBRegressor

    s = s.sort_values("ds")
    last = s["ds"].iloc[-1]
    cut = last - pd.DateOffset(months=BACKTEST_MONTHS)
    train, test = s[s["ds"] <= cut], s[s["ds"] > cut]
    future_ds = pd.date_range(last + pd.Timedelta(days=1), periods=HORIZON_DAYS, freq="D")
    ahead = pd.date_range(
        cut + pd.Timedelta(days=1), future_ds[-1], freq="D"
    )  # backtest + future days

    m = Prophet()
    m.fit(train[["ds", "y"]])
    p = m.predict(pd.DataFrame({"ds": ahead})).set_index("ds")

    y = train.set_index("ds")["y"]
    X = features(pd.DatetimeIndex(train["ds"]), y, train["ds"].iloc[0])
    xgb = XGBRegressor(n_jobs=1)
    xgb.fit(X, y.to_numpy())
    resid = y.to_numpy() - xgb.predict(X)
    lo, hi = np.quantile(resid, [0.1, 0.9])
    xa = pd.Series(xgb.predict(features(ahead, y, train["ds"].iloc[0])), index=ahead)

    t = test.set_index("ds")["y"]
    scores = {
        "prophet": mape(t.to_numpy(), p.loc[t.index, "yhat"].to_numpy()),
        "xgboost": mape(t.to_numpy(), xa.loc[t.index].to_numpy()),
    }
    winner = min(scores, key=scores.get)
    if winner == "prophet":
        f = p.loc[future_ds, ["yhat", "yhat_lower", "yhat_upper"]]
    else:
        f = pd.DataFrame(
            {
                "yhat": xa.loc[future_ds],
                "yhat_lower": xa.loc[future_ds] + lo,
                "yhat_upper": xa.loc[future_ds] + hi,
            }
        )
    return f.reset_index(names="ds").assign(
        server_id=server_id,
        resource=resource,
        model=winner,
        prophet_mape=scores["prophet"],
        xgboost_mape=scores["xgboost"],
    )


def _quiet():
    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", required=True, help="metrics Parquet/CSV path or glob")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", default="seed_forecasts.parquet")
    args = ap.parse_args(argv)
    _quiet()
    started = time.monotonic()
    daily = load(args.metrics)
    min_days = int(round((BACKTEST_MONTHS + MIN_TRAIN_MONTHS) * 30.44))
    series = [(k, g) for k, g in daily.groupby(["server_id", "resource"]) if len(g) >= min_days]
    read = time.monotonic() - started
    with multiprocessing.Pool(args.processes, initializer=_quiet) as pool:
        out = pool.map(forecast_one, series, chunksize=1)
    result = pd.concat(out, ignore_index=True)
    result.to_parquet(args.out)
    wins = result.drop_duplicates(["server_id", "resource"])["model"].value_counts().to_dict()
    wall = time.monotonic() - started
    print(
        f"seed-style: {len(series)} series forecast ({daily.groupby(['server_id', 'resource']).ngroups - len(series)} "
        f"too short) with {args.processes} processes in {wall:.1f}s (read {read:.1f}s); wins {wins}; {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
