"""The combination contender: the fitted contenders weighted by their errors, bounds from their
mixture, scored and crowned like any contender."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_assets import schema
from capacity_assets.forecasting import combination, tournament
from capacity_assets.forecasting.engines.base import ForecastConfig, with_origin
from capacity_assets.forecasting.engines.registry import (
    COMBINERS,
    CONTENDERS,
    TOURNAMENT,
    combine,
    finish,
    run,
)

CFG = ForecastConfig()
END = pd.Timestamp("2026-10-31")


def rows(server, yhat_bt, yhat_fut, model, lo=2.0, hi=3.0, resource="cpu"):
    """ENGINE_RESULTS rows of one series: backtest days up to END, future days after it."""
    bt = pd.date_range(end=END, periods=len(yhat_bt))
    fut = pd.date_range(END + pd.Timedelta(days=1), periods=len(yhat_fut))
    df = pd.concat(
        [
            pd.DataFrame({"ds": bt, "yhat": np.asarray(yhat_bt, float), "split": "backtest"}),
            pd.DataFrame({"ds": fut, "yhat": np.asarray(yhat_fut, float), "split": "future"}),
        ],
        ignore_index=True,
    )
    df = df.assign(
        server_id=server,
        resource=resource,
        model=model,
        yhat_lower=df["yhat"] - lo,
        yhat_upper=df["yhat"] + hi,
        demand=df["yhat"],
        demand_upper=df["yhat"] + hi,
    )
    return schema.conform(with_origin(df), schema.ENGINE_RESULTS)


def test_registry_marks_the_combination_as_a_combiner():
    assert COMBINERS == ("combination",)
    assert "combination" not in CONTENDERS and TOURNAMENT == CONTENDERS + COMBINERS
    with pytest.raises(ValueError, match="combine"):
        run(
            "combination",
            pd.DataFrame({"server_id": ["a"], "resource": ["cpu"], "ds": [END], "y": [1.0]}),
            CFG,
        )


def test_mean_of_members_and_bounds_not_narrower_than_their_average():
    res = {
        "prophet": rows("s1", [40, 42], [50, 52, 54], "prophet", lo=2, hi=3),
        "challenger": rows("s1", [44, 46], [60, 61, 62], "challenger", lo=4, hi=1),
        "ets": rows("s1", [42, 44], [55, 56, 57], "ets", lo=1, hi=1),
    }
    out = combine("combination", res, None, CFG)
    assert list(out.columns) == list(schema.ENGINE_RESULTS)
    assert set(out["model"]) == {"combination"}
    both = pd.concat(res.values()).groupby(["split", "ds"])
    want = both[["yhat", "yhat_lower", "yhat_upper"]].mean()
    got = out.set_index(["split", "ds"])[["yhat", "yhat_lower", "yhat_upper"]].reindex(want.index)
    np.testing.assert_allclose(got["yhat"], want["yhat"])
    assert (got["yhat_lower"] <= want["yhat_lower"] + 1e-9).all()
    assert (got["yhat_upper"] >= want["yhat_upper"] - 1e-9).all()
    # members 10 points apart: the mixture is clearly wider than the average band
    fut = got.loc["future"]
    assert (
        (fut["yhat_upper"] - fut["yhat_lower"])
        > (want.loc["future", "yhat_upper"] - want.loc["future", "yhat_lower"]) + 2
    ).all()
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    assert len(out[out["split"] == "future"]) == 3 and len(out[out["split"] == "backtest"]) == 2


def test_members_that_agree_keep_their_band():
    lo, hi = combination.pool_bounds(
        np.array([[50.0, 50.0]]), np.array([[47.0, 47.0]]), np.array([[55.0, 55.0]]), 0.8
    )
    assert lo[0] == pytest.approx(47.0, abs=1e-6) and hi[0] == pytest.approx(55.0, abs=1e-6)


def test_fallbacks_join_only_when_no_member_has_a_real_fit():
    res = {
        "prophet": pd.concat(
            [rows("s1", [40], [50], "prophet:fallback"), rows("s2", [10], [10], "prophet:fallback")]
        ),
        "challenger": pd.concat(
            [rows("s1", [44], [60], "challenger"), rows("s2", [12], [14], "challenger:fallback")]
        ),
    }
    out = combine("combination", res, None, CFG).set_index(["server_id", "split"])
    assert out.loc[("s1", "future"), "yhat"] == pytest.approx(60.0)  # the fallback is left out
    assert out.loc[("s1", "future"), "model"] == "combination"
    assert out.loc[("s2", "future"), "yhat"] == pytest.approx(12.0)
    assert out.loc[("s2", "future"), "model"] == "combination:fallback"


def test_calibrated_like_the_members_and_clipped():
    rng = np.random.default_rng(0)
    n = 120
    truth = np.full(n, 60.0)
    act = pd.DataFrame(
        {
            "server_id": "s1",
            "resource": "cpu",
            "ds": pd.date_range(end=END, periods=n),
            "y": truth + rng.normal(0, 3, n),
        }
    )
    raw = {
        "prophet": rows("s1", truth - 1, np.full(30, 98.0), "prophet", lo=1, hi=1),
        "challenger": rows("s1", truth + 1, np.full(30, 99.0), "challenger", lo=1, hi=1),
    }
    # the members as the registry publishes them: future bounds calibrated on their backtest
    res = {
        k: finish(v.drop(columns=["model", "demand", "demand_upper"]), act, CFG, k)
        for k, v in raw.items()
    }
    out = combine("combination", res, act, CFG)
    fut = out[out["split"] == "future"]
    # weighted by each member's backtest error: between the members' 98 and 99
    assert (fut["yhat_upper"] <= 100).all() and fut["demand"].between(98.0, 99.0).all()
    assert (fut["demand_upper"] > 100).all()  # unclipped, as for the engines
    # +-1 bands around errors of sd 3: the published band is about +-1.28 * 3, not +-1
    half = fut["yhat"] - fut["yhat_lower"]
    assert half.between(2.5, 8.0).all()


def test_the_combination_can_be_champion_and_is_published():
    act = pd.DataFrame(
        {
            "batch": "b",
            "server_id": "s1",
            "resource": "cpu",
            "ds": pd.date_range(end=END, periods=2),
            "y": [50.0, 50.0],
            "filled": False,
        }
    )
    res = {
        "prophet": rows("s1", [45, 45], [70, 70], "prophet"),
        "challenger": rows("s1", [55, 55], [80, 80], "challenger"),
    }
    res["combination"] = combine("combination", res, None, CFG)
    res = {k: v.assign(batch="b") for k, v in res.items()}
    ch = tournament.champions(res, act)
    assert ch.loc[0, "champion"] == "combination" and ch.loc[0, "champion_mape"] == pytest.approx(
        0.0
    )
    assert list(ch.columns) == list(schema.champions_columns([*CONTENDERS, "combination"]))
    assert np.isnan(ch.loc[0, "ets_mape"])  # registered, not passed: its columns, no score
    gold = tournament.golden_record(res, ch, pd.Timestamp("2026-11-01"), "r")
    assert (gold["yhat"] == 75.0).all() and set(gold["model"]) == {"combination"}


def _mixture_cdf(x, centre, lower, upper, interval):
    """The linear pool's CDF at ``x`` per row, from the definition (two-piece normal members)."""
    from scipy.special import ndtr, ndtri

    z = float(ndtri(0.5 + interval / 2))
    d = x[:, None] - centre
    s = np.where(d < 0, np.maximum(centre - lower, 1e-9), np.maximum(upper - centre, 1e-9)) / z
    return np.nanmean(ndtr(d / s), axis=1)


def test_mixture_bounds_are_the_pool_quantiles_as_bisection_gave_them():
    # members far apart, near each other, missing, identical and with a zero-width side: the cases
    # where Newton's method alone would cycle or divide by zero
    rng = np.random.default_rng(0)
    n = 3000
    centre = rng.uniform(0, 100, (n, 3))
    lower = centre - rng.exponential(3, (n, 3))
    upper = centre + rng.exponential(3, (n, 3))
    centre[::7, 1] = lower[::7, 1] = upper[::7, 1] = np.nan
    for a in (centre, lower, upper):
        a[::11] = a[::11, :1]
    upper[::13, 0] = centre[::13, 0]
    for interval in (0.8, 0.5):
        lo, hi = combination.pool_bounds(centre, lower, upper, interval)
        for got, q, member_q in ((lo, (1 - interval) / 2, lower), (hi, (1 + interval) / 2, upper)):
            # the 40-step bisection the pool used before: same bounds within 1e-6 points
            a, b = np.nanmin(member_q, axis=1), np.nanmax(member_q, axis=1)
            for _ in range(40):
                mid = (a + b) / 2
                below = _mixture_cdf(mid, centre, lower, upper, interval) < q
                a, b = np.where(below, mid, a), np.where(below, b, mid)
            np.testing.assert_allclose(got, (a + b) / 2, rtol=0, atol=1e-6)
            # the pool's quantile (a zero-width side makes a step in its CDF: the step's position)
            assert (_mixture_cdf(got - 1e-6, centre, lower, upper, interval) <= q + 1e-9).all()
            assert (_mixture_cdf(got + 1e-6, centre, lower, upper, interval) >= q - 1e-9).all()


def test_weighted_mixture_bounds_are_the_weighted_pool_quantiles():
    from scipy.special import ndtr, ndtri

    centre = np.array([[40.0, 60.0], [40.0, 60.0], [40.0, 60.0]])
    lower, upper = centre - 4.0, centre + 6.0
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    lo, hi = combination.pool_bounds(centre, lower, upper, 0.8, weights)
    # a member of weight 0 is left out: the other's own band
    assert (lo[0], hi[0]) == (pytest.approx(36.0, abs=1e-6), pytest.approx(46.0, abs=1e-6))
    # equal weights: the unweighted pool
    plain = combination.pool_bounds(centre[1:2], lower[1:2], upper[1:2], 0.8)
    assert (lo[1], hi[1]) == (pytest.approx(plain[0][0]), pytest.approx(plain[1][0]))
    # 9 : 1 - the weighted CDF is at 0.1 and 0.9 at the bounds
    z = float(ndtri(0.9))

    def cdf(x):
        d = x - centre[2]
        s = np.where(d < 0, 4.0, 6.0) / z
        return float(np.dot(weights[2], ndtr(d / s)))

    assert cdf(lo[2]) == pytest.approx(0.1, abs=1e-7) and cdf(hi[2]) == pytest.approx(0.9, abs=1e-7)
    assert 36.0 < lo[2] < hi[2] < 66.0 and hi[2] > 46.0  # the minor member still widens the top
