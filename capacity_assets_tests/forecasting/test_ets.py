"""The ETS contender through the registry: the contract, a real fit, the naive fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_assets.forecasting.engines.base import ForecastConfig, backtest_cutoff
from capacity_assets.forecasting.engines.registry import CONTENDERS, ENGINES, run
from capacity_assets.schema import ENGINE_RESULTS

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
