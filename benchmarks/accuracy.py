"""Held-out accuracy of the contenders against the seasonal-naive baseline.

    python benchmarks/accuracy.py [--servers 30] [--months 36] [--engines prophet,challenger]

A demo fleet gets ``months`` of history plus 6 hidden months; every engine forecasts from the history
alone and its FUTURE rows are scored on the first 180 hidden days. This is the test the tournament
cannot run (it only has backtests), and the one that says whether the future bounds are honest.
MAPE divides by max(|actual|, 5) so near-idle series don't dominate with meaningless percentages.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from capacity_assets.forecasting.engines.base import ForecastConfig, min_history_days  # noqa: E402
from capacity_assets.forecasting.engines.registry import run  # noqa: E402

HIDDEN_MONTHS = 6
SCORED_DAYS = 180


def fleet(servers: int, months: int, seed: int) -> tuple[pd.DataFrame, pd.Timestamp, str]:
    """(metrics with history and hidden months, last history day, source)."""
    from capacity_assets.demo import fleet as demo

    metrics, _ = demo.generate_fleet(servers, months, seed, future_months=HIDDEN_MONTHS)
    return metrics, pd.Timestamp(demo.DEFAULT_END).normalize(), "capacity_assets.demo.fleet.generate_fleet"


def daily(metrics: pd.DataFrame) -> pd.DataFrame:
    """Daily means on a complete calendar (gaps interpolated, as the pipeline's cleaning does)."""
    df = metrics.assign(ds=pd.to_datetime(metrics["timestamp"]).dt.normalize())
    out = df.groupby(["server_id", "resource", "ds"], as_index=False)["utilization_pct"].mean()
    out = out.rename(columns={"utilization_pct": "y"})
    out[["server_id", "resource"]] = out[["server_id", "resource"]].astype(str)
    try:
        from capacity_assets.inputs.cleaning import complete_calendar
        out = complete_calendar(out)[0][["server_id", "resource", "ds", "y"]]
    except Exception as exc:  # noqa: BLE001
        print(f"cleaning.complete_calendar unusable ({exc!r}); gaps left as they are")
    return out.reset_index(drop=True)


def score(fc: pd.DataFrame, actual: pd.DataFrame) -> dict:
    m = fc[fc["split"] == "future"].merge(actual, on=["server_id", "resource", "ds"])
    err = (m["y"] - m["yhat"]).abs()
    m = m.assign(ape=err / np.maximum(m["y"].abs(), 5.0) * 100)
    mape = m.groupby(["server_id", "resource"])["ape"].mean()
    return {
        "series": len(mape), "mape_median": mape.median(), "mape_mean": mape.mean(),
        "wape": err.sum() / m["y"].abs().sum() * 100,
        "below_upper": (m["y"] <= m["yhat_upper"]).mean(),
        "coverage": ((m["y"] >= m["yhat_lower"]) & (m["y"] <= m["yhat_upper"])).mean(),
        "fallbacks": fc.loc[fc["model"].str.endswith(":fallback"), ["server_id", "resource"]]
        .drop_duplicates().shape[0],
        "_mape": mape,
    }


def _cpu() -> float:
    """CPU seconds of this process and its finished children (cmdstan runs Prophet's fits)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=30)
    ap.add_argument("--months", type=int, default=36)
    ap.add_argument("--engines", default="prophet,challenger")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = ForecastConfig(seed=args.seed)

    metrics, end, source = fleet(args.servers, args.months, args.seed)
    days = daily(metrics)
    history = days[days["ds"] <= end]
    length = history.groupby(["server_id", "resource"])["ds"].transform("size")
    short = history.loc[length < min_history_days(cfg), ["server_id", "resource"]].drop_duplicates()
    history = history[length >= min_history_days(cfg)].reset_index(drop=True)   # the pipeline skips them
    hidden = days[(days["ds"] > end) & (days["ds"] <= end + pd.Timedelta(days=SCORED_DAYS))]
    n_series = history.groupby(["server_id", "resource"]).ngroups
    print(f"fleet: {source}, {n_series} series ({len(short)} too short skipped), history "
          f"{history['ds'].min():%Y-%m-%d}..{end:%Y-%m-%d}, scored on {hidden['ds'].nunique()} hidden days; "
          f"nominal interval {cfg.interval:.0%}")

    results = {}
    for name in ["naive", *[e.strip() for e in args.engines.split(",") if e.strip()]]:
        cpu, wall = _cpu(), time.perf_counter()
        fc = run(name, history, cfg)
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        results[name] = {**score(fc, hidden), "ms_cpu": 1000 * cpu / n_series, "wall_s": wall}

    print(f"\n{'model':<12}{'series':>7}{'MAPE med':>10}{'MAPE mean':>11}{'WAPE':>8}{'<=upper':>9}"
          f"{'in [lo,up]':>12}{'fallbk':>8}{'ms CPU/ser':>12}{'wall s':>8}")
    for name, r in results.items():
        print(f"{name:<12}{r['series']:>7}{r['mape_median']:>10.2f}{r['mape_mean']:>11.2f}{r['wape']:>8.2f}"
              f"{r['below_upper']:>9.3f}{r['coverage']:>12.3f}{r['fallbacks']:>8}{r['ms_cpu']:>12.1f}{r['wall_s']:>8.1f}")
    ok = True
    for name, r in results.items():
        if name == "naive":
            continue
        beats = r["wape"] < results["naive"]["wape"]
        calibrated = 0.70 <= r["coverage"] <= 0.90
        ok &= beats and calibrated
        print(f"{name}: beats naive on WAPE: {beats}; coverage {r['coverage']:.3f} within [0.70, 0.90]: "
              f"{calibrated}")
    if "challenger" in results and "prophet" in results:
        a, b = results["challenger"]["_mape"].align(results["prophet"]["_mape"], join="inner")
        print(f"challenger beats prophet on MAPE in {(a < b).mean():.1%} of {len(a)} series")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
