import numpy as np
import pandas as pd
import pytest

from capacity_assets import schema
from capacity_assets.forecasting import tournament as t
from capacity_assets.forecasting.engines.base import with_origin
from capacity_assets.forecasting.engines.registry import CONTENDERS

BATCH = "b1"
END = pd.Timestamp("2026-10-31")  # last history day


def actuals(server, resource, ys, filled=None):
    ds = pd.date_range(END - pd.Timedelta(days=len(ys) - 1), periods=len(ys))
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": server,
            "resource": resource,
            "ds": ds,
            "y": ys,
            "filled": filled if filled is not None else [False] * len(ys),
        }
    )


def results(server, resource, backtest_yhat, future_yhat, model, width=1.0, future_days=3):
    bt = pd.date_range(END - pd.Timedelta(days=len(backtest_yhat) - 1), periods=len(backtest_yhat))
    fut = pd.date_range(END + pd.Timedelta(days=1), periods=future_days)
    fy = np.resize(np.asarray(future_yhat, float), future_days)
    rows = pd.concat(
        [
            pd.DataFrame({"ds": bt, "yhat": backtest_yhat, "split": "backtest"}),
            pd.DataFrame({"ds": fut, "yhat": fy, "split": "future"}),
        ],
        ignore_index=True,
    )
    rows["yhat_lower"] = rows["yhat"] - width
    rows["yhat_upper"] = rows["yhat"] + width
    rows = rows.assign(
        batch=BATCH,
        server_id=server,
        resource=resource,
        model=model,
        demand=rows["yhat"],
        demand_upper=rows["yhat_upper"],
    )
    return schema.conform(with_origin(rows), schema.MODEL_RESULTS)


def cat(*frames):
    return pd.concat(frames, ignore_index=True)


def test_mape_uses_floor_for_near_zero_actuals():
    m = t.series_metrics(
        np.array([0.0, 0.3, 50.0]),
        np.array([1.0, 0.6, 40.0]),
        np.array([0.0, 0.0, 30.0]),
        np.array([2.0, 2.0, 45.0]),
    )
    # errors 1, 0.3, 10 over denominators 5, 5, 50
    assert m["mape"] == pytest.approx((1 / 5 + 0.3 / 5 + 10 / 50) / 3 * 100)
    assert m["wape"] == pytest.approx(11.3 / 50.3 * 100)
    assert m["mae"] == pytest.approx(11.3 / 3)
    assert m["coverage"] == pytest.approx(2 / 3)  # 50 is outside 30..45
    assert t.MAPE_FLOOR == 5.0


def test_all_zero_actuals_have_finite_mape_and_nan_wape():
    m = t.series_metrics(np.zeros(4), np.full(4, 0.5), np.zeros(4), np.ones(4))
    assert m["mape"] == pytest.approx(10.0)
    assert np.isnan(m["wape"])


def test_score_matches_reference_definition():
    ys, yh = [0.0, 0.3, 50.0, 80.0], [1.0, 0.6, 40.0, 81.0]
    s = t.score(
        {"prophet": results("s1", "net", yh, [1.0], "prophet", width=0.5)}, actuals("s1", "net", ys)
    )
    ref = t.series_metrics(np.array(ys), np.array(yh), np.array(yh) - 0.5, np.array(yh) + 0.5)
    for k in ("mape", "wape", "mae", "coverage", "n_days"):
        assert s.loc[0, k] == pytest.approx(ref[k])


def test_score_excludes_filled_days():
    act = actuals("s1", "cpu", [10.0, 20.0], filled=[False, True])
    res = results("s1", "cpu", [11.0, 80.0], [10.0], "prophet")
    s = t.score({"prophet": res}, act)
    assert s.loc[0, "n_days"] == 1
    assert s.loc[0, "mape"] == pytest.approx(10.0)


def test_champion_lower_mape_wins_and_columns_follow_registry():
    act = actuals("s1", "cpu", [50.0, 50.0])
    res = {
        "challenger": results("s1", "cpu", [51.0, 51.0], [60.0], "challenger"),
        "prophet": results("s1", "cpu", [55.0, 55.0], [70.0], "prophet:fallback"),
    }
    ch = t.champions(res, act)
    assert list(ch.columns) == list(schema.champions_columns(CONTENDERS))
    row = ch.iloc[0]
    assert row["champion"] == "challenger"
    assert row["champion_mape"] == pytest.approx(2.0)
    assert row["prophet_mape"] == pytest.approx(10.0)
    assert row["prophet_model"] == "prophet:fallback"
    assert row["trust"] == "high"


def test_tie_goes_to_prophet():
    act = actuals("s1", "cpu", [50.0, 50.0])
    res = {
        "prophet": results("s1", "cpu", [55.0, 45.0], [1.0], "prophet"),
        "challenger": results("s1", "cpu", [45.0, 55.0], [2.0], "challenger"),
    }
    assert t.champions(res, act).loc[0, "champion"] == "prophet"


def test_unscored_contender_loses_and_all_unscored_is_low_trust():
    act = cat(actuals("s1", "cpu", [50.0, 50.0]))
    # prophet has no backtest rows for s1; challenger is bad but scored. s2 has no actuals at all
    p = results("s1", "cpu", [], [1.0], "prophet")
    c = results("s1", "cpu", [80.0, 80.0], [2.0], "challenger")
    p2, c2 = (
        results("s2", "disk", [1.0], [1.0], "prophet"),
        results("s2", "disk", [1.0], [1.0], "challenger"),
    )
    ch = t.champions({"prophet": cat(p, p2), "challenger": cat(c, c2)}, act).set_index("server_id")
    assert ch.loc["s1", "champion"] == "challenger"
    assert np.isnan(ch.loc["s1", "prophet_mape"])
    assert ch.loc["s1", "trust"] == "low"  # 60 % MAPE
    assert ch.loc["s2", "champion"] == "prophet" and np.isnan(ch.loc["s2", "champion_mape"])
    assert ch.loc["s2", "trust"] == "low"


def test_trust_thresholds_are_parameters():
    mape = pd.Series([10.0, 10.1, 20.0, 20.1, np.nan])
    assert t.trust_level(mape).tolist() == ["high", "medium", "medium", "low", "low"]
    assert t.trust_level(mape, high=5, medium=10).tolist() == ["medium", "low", "low", "low", "low"]


def test_third_contender_adds_columns_without_code_changes():
    act = actuals("s1", "cpu", [50.0])
    res = {
        "prophet": results("s1", "cpu", [60.0], [1.0], "prophet"),
        "challenger": results("s1", "cpu", [58.0], [1.0], "challenger"),
        "ets": results("s1", "cpu", [50.5], [1.0], "ets"),
    }
    ch = t.champions(res, act)
    assert {"ets_mape", "ets_wape", "ets_mae", "ets_coverage", "ets_model"} <= set(ch.columns)
    assert ch.loc[0, "champion"] == "ets"
    assert t.wins(ch) == {"prophet": 0, "challenger": 0, "ets": 1}


def test_golden_record_is_champions_future_rows_exactly():
    act = cat(actuals("s1", "cpu", [50.0, 50.0]), actuals("s2", "mem", [50.0, 50.0]))
    p = cat(
        results("s1", "cpu", [50.0, 50.0], [70.1, 70.2, 70.3], "prophet"),
        results("s2", "mem", [90.0, 90.0], [10.0, 11.0, 12.0], "prophet"),
    )
    c = cat(
        results("s1", "cpu", [40.0, 40.0], [30.0, 31.0, 32.0], "challenger", width=3.0),
        results("s2", "mem", [49.0, 49.0], [20.5, 21.5, 22.5], "challenger:fallback", width=2.5),
    )
    res = {"prophet": p, "challenger": c}
    ch = t.champions(res, act)
    gen = pd.Timestamp("2026-11-26 06:30:00")
    fc = t.golden_record(res, ch, gen, "run-42")
    assert list(fc.columns) == list(schema.FORECASTS)
    cols = ["server_id", "resource", "ds", "yhat", "yhat_lower", "yhat_upper", "model"]
    expected = cat(
        p[(p.server_id == "s1") & (p.split == "future")],
        c[(c.server_id == "s2") & (c.split == "future")],
    )
    pd.testing.assert_frame_equal(
        fc[cols].reset_index(drop=True), expected[cols].reset_index(drop=True)
    )
    assert fc.groupby("server_id")["champion"].first().to_dict() == {
        "s1": "prophet",
        "s2": "challenger",
    }
    assert set(fc["run_id"]) == {"run-42"} and (fc["generated_at"] == gen).all()
    assert fc.loc[fc.server_id == "s2", "champion_mape"].iloc[0] == pytest.approx(2.0)
    aware = t.golden_record(res, ch, pd.Timestamp("2026-11-26 07:30:00+01:00"), "run-42")
    assert (aware["generated_at"] == gen).all()  # stored naive UTC


def _champ(mapes):
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": [f"s{i}" for i in range(len(mapes))],
            "resource": "cpu",
            "champion": "prophet",
            "champion_mape": mapes,
            "prophet_mape": mapes,
        }
    )


def test_summaries():
    ch = _champ([5.0, 15.0, 30.0]).assign(
        champion=["prophet", "challenger", "prophet"], challenger_mape=1.0
    )
    assert t.wins(ch) == {"prophet": 2, "challenger": 1}
    assert t.median_champion_mape(ch) == 15.0
    md = t.markdown_preview(ch[["server_id", "champion_mape"]], n=2)
    assert md.splitlines() == [
        "| server_id | champion_mape |",
        "|---|---|",
        "| s0 | 5.00 |",
        "| s1 | 15.00 |",
    ]
