"""Calibration keeps its coverage on heavy-tailed series, whatever the model's own band says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_assets.forecasting.engines import intervals

END = pd.Timestamp("2026-10-31")
SERIES, BACKTEST, FUTURE = 24, 122, 180


def _fleet(rng, days, start, heavy: bool):
    rows = []
    for i in range(SERIES):
        ds = pd.date_range(start, periods=days)
        scale = 1.0 + i % 4  # noisier and quieter series side by side
        truth = 40 + 6 * (ds.dayofweek < 5)
        noise = rng.standard_t(3, days) / np.sqrt(3) if heavy else rng.normal(0, 1, days)
        spikes = rng.random(days) < 0.01
        y = truth + scale * noise + spikes * 20.0
        # a model that knows the mean but not the noise: a band of +-1 everywhere
        rows.append(
            pd.DataFrame(
                {
                    "server_id": f"s{i}",
                    "resource": "cpu",
                    "ds": ds,
                    "y": y,
                    "yhat": truth.astype(float),
                    "yhat_lower": truth - 1.0,
                    "yhat_upper": truth + 1.0,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_heavy_tailed_coverage_on_held_out_days():
    rng = np.random.default_rng(11)
    backtest = _fleet(rng, BACKTEST, END - pd.Timedelta(days=BACKTEST - 1), heavy=True)
    future = _fleet(rng, FUTURE, END + pd.Timedelta(days=1), heavy=True)
    cal = intervals.calibrate(future.drop(columns="y"), backtest.drop(columns="y"), backtest, 0.8)
    inside = (future["y"] >= cal["yhat_lower"]) & (future["y"] <= cal["yhat_upper"])
    assert 0.75 <= inside.mean() <= 0.85
    # per series too: the quiet ones are not over-covered, the noisy ones not under-covered
    per = inside.groupby(future["server_id"]).mean()
    assert per.between(0.6, 0.95).all()


def test_a_well_calibrated_band_is_kept():
    rng = np.random.default_rng(5)
    bt = _fleet(rng, BACKTEST, END - pd.Timedelta(days=BACKTEST - 1), heavy=False)
    z = 1.2816
    scale = 1.0 + bt["server_id"].str[1:].astype(int) % 4
    bt = bt.assign(yhat_lower=bt["yhat"] - z * scale, yhat_upper=bt["yhat"] + z * scale)
    k, ratios = intervals.factors(bt, bt, 0.8)
    assert 0.8 < np.median(list(k.values())) < 1.25
    assert all(0.8 < r < 1.25 for r in ratios["cpu"].values())


def test_series_without_backtest_keep_their_bounds():
    fut = pd.DataFrame(
        {
            "server_id": "x",
            "resource": "cpu",
            "ds": pd.date_range(END, periods=3),
            "yhat": 50.0,
            "yhat_lower": 49.0,
            "yhat_upper": 52.0,
        }
    )
    empty = fut.iloc[:0]
    out = intervals.calibrate(fut, empty, empty.assign(y=[]), 0.8)
    pd.testing.assert_frame_equal(out, fut)


def test_factors_are_each_series_conformal_quantile():
    """The per-series quantiles and the horizon corrections are computed for the whole call at once:
    the same factors as ``np.quantile`` series by series and block by block (groups of 1 to 130
    scores, zero-width bands, four resources)."""
    rng = np.random.default_rng(4)
    parts = []
    for i in range(60):
        n = int(rng.integers(1, 130))
        yhat = rng.uniform(0, 100, n)
        width = 0 if i % 17 == 0 else 1
        parts.append(
            pd.DataFrame(
                {
                    "server_id": f"s{i // 4}",
                    "resource": ["cpu", "memory", "disk", "network"][i % 4],
                    "ds": pd.date_range("2026-07-01", periods=n),
                    "yhat": yhat,
                    "yhat_lower": yhat - width * rng.exponential(2, n),
                    "yhat_upper": yhat + width * rng.exponential(2, n),
                    "y": yhat + rng.standard_t(3, n) * 2,
                }
            )
        )
    bt = pd.concat(parts, ignore_index=True)
    actuals = bt[["server_id", "resource", "ds", "y"]]
    k, ratios = intervals.factors(bt, actuals, 0.8)
    pools = {}
    for resource, g in bt.groupby("resource"):
        err = g["y"] - g["yhat"]
        half = np.where(err >= 0, g["yhat_upper"] - g["yhat"], g["yhat"] - g["yhat_lower"])
        floor = np.maximum(1e-6, 0.05 * err.abs().groupby([g["server_id"]]).transform("mean"))
        g = g.assign(score=err.abs() / np.maximum(half, floor))
        pools[resource] = intervals._conformal_quantile(g["score"].to_numpy(), 0.8)
        horizon = (g["ds"] - g.groupby("server_id")["ds"].transform("min")).dt.days + 1
        for block, b in g.groupby(intervals._block(horizon.to_numpy())):
            want = intervals._conformal_quantile(b["score"].to_numpy(), 0.8) / pools[resource]
            assert ratios[resource][block] == pytest.approx(want, rel=1e-12)
        for server, s in g.groupby("server_id"):
            own = intervals._conformal_quantile(s["score"].to_numpy(), 0.8)
            want = np.clip(np.sqrt(max(own, 1e-9) * max(pools[resource], 1e-9)), 0.2, 10.0)
            assert k[(server, resource)] == pytest.approx(want, rel=1e-12)
    assert len(k) == 60
