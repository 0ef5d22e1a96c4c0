"""The ETS contender through the registry: the contract, a real fit, the naive fallback; and its
batch call, which must give the per-series forecasts and survive a series it cannot fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from capacity_assets.forecasting.engines import ets
from capacity_assets.forecasting.engines.base import ForecastConfig, backtest_cutoff
from capacity_assets.forecasting.engines.registry import CONTENDERS, ENGINES, run
from capacity_assets.schema import ENGINE_RESULTS
from capacity_assets_tests.forecasting.test_challenger import assert_windows_are_shorter_backtests

pytest.importorskip("statsforecast")
CFG = ForecastConfig()
DAYS = 420
DS = pd.date_range("2025-01-01", periods=DAYS, freq="D")


@pytest.fixture(scope="module")
def out():
    rng = np.random.default_rng(3)
    weekly = np.where(DS.dayofweek >= 5, -8.0, 3.0)
    history = pd.concat(
        [
            pd.DataFrame(
                {
                    "server_id": "weekly",
                    "resource": "cpu",
                    "ds": DS,
                    "y": 40 + 0.02 * np.arange(DAYS) + weekly + rng.normal(0, 1, DAYS),
                }
            ),
            pd.DataFrame({"server_id": "flat", "resource": "disk", "ds": DS, "y": 37.0}),
        ],
        ignore_index=True,
    )
    return run("ets", history, CFG)


def test_registered_as_a_fitted_contender():
    assert "ets" in CONTENDERS and ENGINES["ets"].module.endswith(".ets")


def test_contract_and_split(out):
    assert list(out.columns) == list(ENGINE_RESULTS)
    assert (out.yhat_lower <= out.yhat).all() and (out.yhat <= out.yhat_upper).all()
    assert out[["yhat", "yhat_lower", "yhat_upper"]].stack().between(0, 100).all()
    for server in ("weekly", "flat"):
        s = out[out.server_id == server]
        assert (s.split == "future").sum() == CFG.horizon_days
        bt = s[s.split == "backtest"]
        assert (
            bt.ds.min() == backtest_cutoff(DS[-1], CFG) + pd.Timedelta(days=1)
            and bt.ds.max() == DS[-1]
        )


def test_real_fit_sees_the_week_and_constant_falls_back(out):
    w = out[(out.server_id == "weekly") & (out.split == "future")]
    assert set(w.model) == {"ets"}
    weekend = w[w.ds.dt.dayofweek >= 5].yhat.mean()
    weekday = w[w.ds.dt.dayofweek < 5].yhat.mean()
    assert weekday - weekend == pytest.approx(11.0, abs=2.5)
    assert 45 < w.yhat.iloc[0] < 55
    assert set(out.loc[out.server_id == "flat", "model"]) == {"ets:fallback"}


# ---------------------------------------------------------------- the batch call (issue 25)

END = pd.Timestamp("2026-03-31")


def _series(name: str, resource: str, y, end: pd.Timestamp = END) -> pd.DataFrame:
    ds = pd.date_range(end=end, periods=len(y), freq="D")
    return pd.DataFrame({"server_id": name, "resource": resource, "ds": ds, "y": y})


def _generated() -> pd.DataFrame:
    """Trends, weekly seasons and noise of several lengths; gaps; a series ending two weeks early
    (another backtest horizon); one too young for a backtest, one too short, one constant."""
    rng = np.random.default_rng(11)

    def shape(days, level, slope, week, noise):
        t = np.arange(days)
        weekly = week * np.where(np.arange(days) % 7 >= 5, -1.0, 0.4)
        return level + slope * t + weekly + rng.normal(0, noise, days)

    holes = _series("holes", "disk", shape(420, 50, 0.02, 3, 1))
    holes.loc[rng.choice(400, 15, replace=False), "y"] = np.nan  # missing values
    holes = holes.drop(index=range(200, 210))  # ten days without a row
    return pd.concat(
        [
            _series("rising", "cpu", shape(420, 30, 0.05, 5, 1)),
            _series("falling", "memory", shape(300, 70, -0.03, 2, 2)),
            _series("noisy", "network", shape(500, 20, 0.0, 0, 6)),
            holes,
            _series("late", "cpu", shape(400, 40, 0.01, 4, 1), END - pd.Timedelta(days=16)),
            _series("young", "cpu", shape(100, 35, 0.02, 3, 1)),
            _series("short", "cpu", shape(20, 35, 0.0, 3, 1)),
            _series("flat", "disk", np.full(420, 61.0)),
        ],
        ignore_index=True,
    ).sample(frac=1, random_state=0)  # rows in any order


def _per_series(history: pd.DataFrame, cfg: ForecastConfig) -> tuple[pd.DataFrame, dict]:
    """The reference: one AutoETS call per fit, on each series' own interpolated daily frame."""
    from statsforecast.models import AutoETS

    from capacity_assets.forecasting.engines.base import future_dates

    level = int(round(cfg.interval * 100))
    rows, failed = [], {}
    for key, g in history.groupby(["server_id", "resource"], sort=True):
        g = g.sort_values("ds")
        full = pd.date_range(g["ds"].iloc[0], g["ds"].iloc[-1], freq="D")
        y = (
            pd.Series(g["y"].to_numpy(float), index=pd.DatetimeIndex(g["ds"]))
            .reindex(full)
            .interpolate(limit_direction="both")
            .to_numpy()
        )
        train = full <= backtest_cutoff(full[-1], cfg)
        fits = [("future", y, future_dates(full[-1], cfg))]
        if train.any() and (~train).any():
            fits.insert(0, ("backtest", y[train], full[~train]))
        out = []
        for split, data, ds in fits:
            window = data[-210:]
            if len(window) < 28 or np.ptp(window) < 1e-9:
                failed[key] = (
                    f"only {len(window)} observations" if len(window) < 28 else "constant series"
                )
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fc = AutoETS(season_length=7, model="AAA", damped=True).forecast(
                    y=window, h=len(ds), level=[level]
                )
            mean = fc["mean"]
            out.append(
                pd.DataFrame(
                    {
                        "server_id": key[0],
                        "resource": key[1],
                        "ds": ds,
                        "yhat": mean,
                        "yhat_lower": np.minimum(fc[f"lo-{level}"], mean),
                        "yhat_upper": np.maximum(fc[f"hi-{level}"], mean),
                        "split": split,
                    }
                )
            )
        else:
            rows.extend(out)
    return pd.concat(rows, ignore_index=True), failed


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(
        server_id=rows["server_id"].astype(str), resource=rows["resource"].astype(str)
    )
    return rows.sort_values(["server_id", "resource", "split", "ds"], ignore_index=True)


def test_one_batch_call_gives_the_per_series_forecasts():
    history = _generated()
    rows, failed = ets.predict(history, CFG)
    ref, ref_failed = _per_series(history, CFG)
    assert (
        failed
        == ref_failed
        == {
            ("short", "cpu"): "only 20 observations",
            ("flat", "disk"): "constant series",
        }
    )
    assert_windows_are_shorter_backtests(rows, history, _per_series)
    rows = rows[rows["split"] != "window"].drop(columns="origin")
    rows, ref = _sorted(rows), _sorted(ref)
    assert rows[["server_id", "resource", "split"]].equals(ref[["server_id", "resource", "split"]])
    assert (rows["ds"].to_numpy() == ref["ds"].to_numpy()).all()
    cols = ["yhat", "yhat_lower", "yhat_upper"]
    np.testing.assert_allclose(rows[cols].to_numpy(), ref[cols].to_numpy(), rtol=0, atol=1e-6)
    # the series ending early was backtested on its own horizon; the young one has no backtest
    backtest = rows[rows["split"] == "backtest"].groupby("server_id").size()
    assert backtest["late"] == backtest["rising"] - 1 and "young" not in backtest


def test_a_series_that_breaks_the_batch_call_costs_only_itself():
    """statsforecast refuses a window with an infinite value; that call is then fitted series by
    series, and the other series get exactly the forecasts they get without it."""
    good = _generated()
    good = good[good["server_id"].isin(["rising", "falling", "noisy"])]
    bad = _series("broken", "cpu", np.r_[np.linspace(20, 40, 300), np.inf, np.linspace(40, 45, 99)])
    lines = []

    class Log:
        def info(self, msg, *args):
            lines.append(msg % args)

    rows, failed = ets.predict(pd.concat([good, bad], ignore_index=True), CFG, log=Log())
    alone, _ = ets.predict(good, CFG)
    assert list(failed) == [("broken", "cpu")] and "missing values" in failed[("broken", "cpu")]
    assert any("batch call failed" in line for line in lines)
    pd.testing.assert_frame_equal(_sorted(rows), _sorted(alone))
