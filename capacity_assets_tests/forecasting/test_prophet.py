"""Prophet engine: the fast path is stock Prophet's fit, and the forecasts behave on tiny series."""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import pandas as pd
import pytest

from capacity_assets.forecasting.engines import prophet as engine
from capacity_assets.forecasting.engines.base import ForecastConfig, backtest_cutoff, future_dates
from capacity_assets.forecasting.engines.registry import run
from capacity_assets.schema import ENGINE_RESULTS

CFG = ForecastConfig()
DAYS = 420  # over the 10-month minimum, under two years: weekly seasonality only, fits are fast
END = pd.Timestamp("2026-11-25")


def make(server, y, resource="cpu"):
    ds = pd.date_range(end=END, periods=len(y), freq="D")
    return pd.DataFrame(
        {"server_id": server, "resource": resource, "ds": ds, "y": np.asarray(y, float)}
    )


def weekly_truth(ds):
    return np.where(ds.dayofweek >= 5, -6.0, 2.4)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    t = np.arange(DAYS)
    ds = pd.date_range(end=END, periods=DAYS, freq="D")
    series = {
        "linear": 20 + 0.05 * t + rng.normal(0, 0.3, DAYS),
        "weekly": 40 + weekly_truth(ds) + rng.normal(0, 0.5, DAYS),
        "quiet": 50 + weekly_truth(ds) + rng.normal(0, 0.5, DAYS),
        "noisy": 50 + weekly_truth(ds) + rng.normal(0, 6.0, DAYS),
        "constant": np.full(DAYS, 37.0),
        "zeros": np.zeros(DAYS),
    }
    history = pd.concat([make(k, v) for k, v in series.items()], ignore_index=True)
    return history, run("prophet", history, CFG)


def rows(out, server, split):
    return out[(out.server_id == server) & (out.split == split)].sort_values("ds")


def test_fast_path_matches_stock_prophet():
    from prophet import Prophet

    rng = np.random.default_rng(7)
    ds = pd.date_range(end=END, periods=1096, freq="D")  # 36 months: yearly seasonality on
    t = np.arange(len(ds))
    y = np.clip(
        30
        + 0.02 * t
        + weekly_truth(ds)
        + 5 * np.sin(2 * np.pi * ds.dayofyear / 365.25)
        + rng.normal(0, 2, len(ds)),
        0,
        100,
    )
    logging.getLogger("cmdstanpy").disabled = True
    stock = Prophet(**engine.prophet_kwargs(), uncertainty_samples=0).fit(
        pd.DataFrame({"ds": ds, "y": y}), tol_rel_grad=engine.LBFGS_TOL_REL_GRAD
    )
    future = stock.make_future_dataframe(180, include_history=False)
    expected = stock.predict(future)["yhat"].to_numpy()

    days = engine._as_days(pd.Series(ds))
    design = engine.make_design(days)
    with tempfile.TemporaryDirectory() as workdir:
        params = engine.fit_map(y, design, workdir, "parity")
    got, _ = engine.predict_map(params, design, engine._as_days(future["ds"]), 0.8)
    assert design.yearly and design.S == len(stock.changepoints_t)
    np.testing.assert_allclose(design.t_change, stock.changepoints_t)
    assert np.abs(got - expected).max() < 0.5  # percentage points on a 0-100 scale


def test_schema_and_bounds_ordered(batch):
    _, out = batch
    assert list(out.columns) == list(ENGINE_RESULTS)
    assert (out.yhat_lower <= out.yhat).all() and (out.yhat <= out.yhat_upper).all()
    assert out[["yhat", "yhat_lower", "yhat_upper"]].stack().between(0, 100).all()
    assert set(out.loc[out.server_id.isin(["linear", "weekly", "quiet", "noisy"]), "model"]) == {
        "prophet"
    }


def test_split_dates_and_lengths(batch):
    history, out = batch
    h = history[history.server_id == "linear"]
    cutoff = backtest_cutoff(h.ds.max(), CFG)
    bt, fut = rows(out, "linear", "backtest"), rows(out, "linear", "future")
    assert list(bt.ds) == list(h.ds[h.ds > cutoff])
    assert list(fut.ds) == list(future_dates(h.ds.max(), CFG)) and len(fut) == CFG.horizon_days


def test_linear_trend_is_extrapolated(batch):
    _, out = batch
    fut = rows(out, "linear", "future")
    slope = np.polyfit(np.arange(len(fut)), fut.yhat.to_numpy(), 1)[0]
    assert slope == pytest.approx(0.05, rel=0.1)
    assert fut.yhat.iloc[0] == pytest.approx(20 + 0.05 * DAYS, abs=1.0)


def test_weekly_pattern_is_recovered(batch):
    _, out = batch
    fut = rows(out, "weekly", "future")
    profile = fut.groupby(fut.ds.dt.dayofweek).yhat.mean()
    truth = pd.Series(weekly_truth(fut.ds.dt), index=fut.index).groupby(fut.ds.dt.dayofweek).mean()
    assert np.corrcoef(profile, truth)[0, 1] > 0.95


def test_noisier_series_gets_wider_bounds(batch):
    _, out = batch
    width = {
        s: (rows(out, s, "future").yhat_upper - rows(out, s, "future").yhat_lower).mean()
        for s in ("quiet", "noisy")
    }
    assert width["noisy"] > 3 * width["quiet"]


def test_constant_and_zero_series_fall_back(batch):
    _, out = batch
    for server in ("constant", "zeros"):
        assert set(out.loc[out.server_id == server, "model"]) == {"prophet:fallback"}
        splits = {"backtest", "window", "future"}  # the fallback forecasts from every origin too
        assert set(out.loc[out.server_id == server, "split"]) == splits


def test_failed_fit_does_not_fail_the_batch(monkeypatch, caplog):
    real = engine._run_stan

    def flaky(data_path, *args):
        if "/s1" in data_path:  # the second series' fits
            raise engine.FitError("optimizer blew up")
        return real(data_path, *args)

    monkeypatch.setattr(engine, "_run_stan", flaky)
    rng = np.random.default_rng(3)
    history = pd.concat(
        [make(f"srv{i}", 30 + rng.normal(0, 1, DAYS)) for i in range(3)], ignore_index=True
    )
    with caplog.at_level(logging.INFO):
        out = run("prophet", history, CFG)
    models = out.groupby("server_id").model.unique().map(list).to_dict()
    assert models == {"srv0": ["prophet"], "srv1": ["prophet:fallback"], "srv2": ["prophet"]}
    assert "optimizer blew up" in caplog.text and "1 fallbacks" in caplog.text


def test_warm_start_carries_the_backtest_fit_onto_the_refit():
    """``warm_init`` (off by default, see the engine's docstring) starts the refit on the backtest
    fit's curve, though the refit's time scale, y scale and changepoints all differ, and the refit
    from there is still a fit of the whole history."""
    rng = np.random.default_rng(5)
    ds = pd.date_range(end=END, periods=800, freq="D")  # over two years: yearly terms in the refit
    t = np.arange(len(ds))
    y = 30 + 0.01 * t + 0.04 * np.maximum(t - 500, 0) + weekly_truth(ds) + rng.normal(0, 1, len(t))
    days = engine._as_days(pd.Series(ds))
    train = days <= engine._as_days(pd.Series([backtest_cutoff(ds[-1], CFG)]))[0]
    d_bt, d_full = engine.make_design(days[train]), engine.make_design(days)
    assert not d_bt.yearly and d_full.yearly and d_full.K > d_bt.K
    with tempfile.TemporaryDirectory() as workdir:
        p_bt = engine.fit_map(y[train], d_bt, workdir, "b")
        init = engine.warm_init(p_bt, d_bt, d_full, float(np.abs(y).max()))
        cold = engine.fit_map(y, d_full, workdir, "c")
        warm = engine.fit_map(y, d_full, workdir, "w", init=init)
    start = {k: np.asarray(v, float) for k, v in init.items()} | {"y_scale": float(y.max())}
    before, _ = engine.predict_map(p_bt, d_bt, days, 0.8)
    carried, _ = engine.predict_map(start, d_full, days, 0.8)
    assert np.abs(carried - before)[train].max() < 0.25  # the backtest fit's curve, in points
    np.testing.assert_allclose(carried[~train], before[~train], atol=1e-6)  # and its extrapolation
    future = engine._as_days(pd.Series(future_dates(ds[-1], CFG)))
    f_cold, _ = engine.predict_map(cold, d_full, future, 0.8)
    f_warm, _ = engine.predict_map(warm, d_full, future, 0.8)
    tf = t[-1] + 1 + np.arange(len(future))
    fds = pd.DatetimeIndex(future_dates(ds[-1], CFG))
    truth = 30 + 0.01 * tf + 0.04 * (tf - 500) + weekly_truth(fds)
    assert np.abs(f_warm - f_cold).max() < 1.0
    assert np.abs(f_warm - truth).mean() < 1.5 and np.abs(f_cold - truth).mean() < 1.5
