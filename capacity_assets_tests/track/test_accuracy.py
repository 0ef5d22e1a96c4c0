"""forecast_accuracy by hand: 2 series x 3 vintages (see the numbers in each test)."""

import pandas as pd
import pytest

from capacity_assets.track.accuracy import backtest_mape_by_batch, batch_drift, score_vintages
from capacity_assets.track.contracts import FORECAST_ACCURACY, HORIZON_BUCKETS
from capacity_assets.track.vintages import append_vintage, as_vintage

from .helpers import actuals, cat, day, golden

B = "b1"
# actuals 2026-01-01 .. 2026-01-14; cpu's 01-03 (60) was gap-filled and must not count
CPU_Y = [50, 52, 60, 40, 50, 50, 50, 56, 50, 50, 50, 50, 50, 50]


def scenario():
    vintages = [
        (
            "2026-01-01",
            "r1",
            golden(B, "a", "cpu", "2026-01-01", 50, 45, 55, run_id="r1"),
            golden(B, "n", "network", "2026-01-01", 1.0, 0.0, 2.0, run_id="r1"),
        ),
        (
            "2026-01-08",
            "r2",
            golden(B, "a", "cpu", "2026-01-08", 55, 50, 60, run_id="r2"),
            golden(B, "n", "network", "2026-01-08", 0.5, 0.0, 1.0, run_id="r2"),
        ),
        (
            "2026-01-15",
            "r3",
            golden(B, "a", "cpu", "2026-01-15", 50, 45, 55, run_id="r3"),
            golden(B, "n", "network", "2026-01-15", 0.5, 0.0, 1.0, run_id="r3"),
        ),
    ]
    history = pd.DataFrame()
    for _, _, *series in vintages:
        history = append_vintage(history, as_vintage(cat(*series)))
    processed = cat(
        actuals(B, "a", "cpu", "2026-01-01", CPU_Y, filled=["2026-01-03"]),
        actuals(B, "n", "network", "2026-01-01", [0.5] * 14),
    )
    return history, processed


def row(acc, vintage, server, bucket):
    got = acc[
        (acc["vintage"] == day(vintage))
        & (acc["server_id"] == server)
        & (acc["horizon_bucket"] == bucket)
    ]
    assert len(got) == 1, (vintage, server, bucket)
    return got.iloc[0]


def test_contract_and_which_rows_exist():
    acc = score_vintages(*scenario())
    assert list(acc.columns) == list(FORECAST_ACCURACY)
    assert acc.dtypes.astype(str).to_dict() == FORECAST_ACCURACY
    got = set(zip(acc["vintage"].dt.strftime("%m-%d"), acc["server_id"], acc["horizon_bucket"]))
    # 01-01: days 1-10 -> buckets 1-7 and 8-30; 01-08: only days 1-7 have actuals; 01-15: none yet.
    # 31-90 and 91-180 have no scored day anywhere: no rows
    assert got == {
        (v, s, b)
        for s in ("a", "n")
        for v, b in [
            ("01-01", "1-7"),
            ("01-01", "8-30"),
            ("01-01", "all"),
            ("01-08", "1-7"),
            ("01-08", "all"),
        ]
    }
    # sorted by vintage, series, bucket order
    assert acc["horizon_bucket"].tolist()[:3] == ["1-7", "8-30", "all"]
    assert set(acc["horizon_bucket"]) <= set(HORIZON_BUCKETS)


def test_busy_series_by_hand():
    acc = score_vintages(*scenario())
    # vintage 01-01, days 1-7: 6 measured days (01-03 filled). yhat 50, band 45..55.
    # y = 50, 52, 40, 50, 50, 50 -> err (yhat - y) = 0, -2, 10, 0, 0, 0
    r = row(acc, "2026-01-01", "a", "1-7")
    assert r["days_scored"] == 6
    assert r["mape"] == pytest.approx((2 / 52 + 10 / 40) / 6 * 100)
    assert r["wape"] == pytest.approx(12 / 292 * 100)
    assert r["bias"] == pytest.approx(8 / 6)
    assert r["band_coverage"] == pytest.approx(5 / 6)  # 40 is below 45
    # days 8-10: y = 56, 50, 50 -> err -6, 0, 0; 56 is above 55
    r = row(acc, "2026-01-01", "a", "8-30")
    assert r["days_scored"] == 3
    assert r["mape"] == pytest.approx(6 / 56 / 3 * 100)
    assert r["wape"] == pytest.approx(6 / 156 * 100)
    assert r["bias"] == pytest.approx(-2.0)
    assert r["band_coverage"] == pytest.approx(2 / 3)
    r = row(acc, "2026-01-01", "a", "all")
    assert r["days_scored"] == 9
    assert r["mape"] == pytest.approx((2 / 52 + 10 / 40 + 6 / 56) / 9 * 100)
    assert r["wape"] == pytest.approx(18 / 448 * 100)
    assert r["bias"] == pytest.approx(2 / 9)
    assert r["band_coverage"] == pytest.approx(7 / 9)
    # vintage 01-08: yhat 55, band 50..60 (inclusive); y = 56, 50 x 6
    r = row(acc, "2026-01-08", "a", "1-7")
    assert r["days_scored"] == 7
    assert r["mape"] == pytest.approx((1 / 56 + 6 * 5 / 50) / 7 * 100)
    assert r["wape"] == pytest.approx(31 / 356 * 100)
    assert r["bias"] == pytest.approx(29 / 7)
    assert r["band_coverage"] == pytest.approx(1.0)
    assert (
        row(acc, "2026-01-08", "a", "all")[["days_scored", "mape"]].tolist()
        == row(acc, "2026-01-08", "a", "1-7")[["days_scored", "mape"]].tolist()
    )


def test_idle_series_uses_the_mape_floor():
    acc = score_vintages(*scenario())
    # y = 0.5, yhat 1.0: a 0.5 pp miss over the 5-point floor is 10 %, while WAPE says 100 %
    r = row(acc, "2026-01-01", "n", "all")
    assert r["days_scored"] == 10
    assert r["mape"] == pytest.approx(10.0)
    assert r["wape"] == pytest.approx(100.0)
    assert r["bias"] == pytest.approx(0.5)
    assert r["band_coverage"] == pytest.approx(1.0)
    r = row(acc, "2026-01-08", "n", "1-7")
    assert (r["mape"], r["wape"], r["bias"], r["band_coverage"]) == (0.0, 0.0, 0.0, 1.0)


def test_all_zero_actuals_give_nan_wape_and_no_actuals_no_rows():
    history = as_vintage(golden(B, "z", "network", "2026-01-01", 0.5, 0.0, 1.0))
    acc = score_vintages(history, actuals(B, "z", "network", "2026-01-01", [0.0] * 3))
    assert acc["wape"].isna().all() and acc["mape"].tolist() == pytest.approx([10.0, 10.0])
    assert score_vintages(history, actuals(B, "other", "cpu", "2026-01-01", [1.0])).empty


def test_day_91_and_beyond_fall_in_their_buckets():
    history = as_vintage(golden(B, "a", "cpu", "2026-01-01", 50, 40, 60, days=200))
    acc = score_vintages(history, actuals(B, "a", "cpu", "2026-01-01", [50.0] * 200))
    days = acc.set_index("horizon_bucket")["days_scored"].to_dict()
    assert days == {
        "1-7": 7,
        "8-30": 23,
        "31-90": 60,
        "91-180": 90,
        "all": 200,
    }  # 181-200 only in all


def accuracy_rows(batch, vintage_mapes, days=10):
    """Hand-made `all` rows: vintage -> list of series MAPEs."""
    rows = [
        {
            "batch": batch,
            "vintage": day(v),
            "server_id": f"s{i}",
            "resource": "cpu",
            "model": "prophet",
            "horizon_bucket": "all",
            "days_scored": days,
            "mape": m,
            "wape": m,
            "bias": 0.0,
            "band_coverage": 0.8,
        }
        for v, ms in vintage_mapes.items()
        for i, m in enumerate(ms)
    ]
    return pd.DataFrame(rows)


def test_batch_drift_uses_the_last_four_scored_vintages():
    acc = cat(
        accuracy_rows(
            "b1",
            {
                "2026-01-01": [100, 100],
                "2026-01-08": [10, 20],
                "2026-01-15": [10, 20],
                "2026-01-22": [10, 20],
                "2026-01-29": [30, 30],
            },
        ),
        accuracy_rows("b1", {"2026-02-05": [500]}, days=3),  # too young: fewer than 7 scored days
        accuracy_rows("b2", {"2026-01-29": [40, 50]}),
        accuracy_rows("b3", {"2026-01-29": [5]}),
    )
    passed, details = batch_drift(acc, {"b1": 12.0, "b2": 20.0, "b4": 9.0}, factor=1.5)
    by = {r["batch"]: r for r in details["batches"]}
    # b1: (10+20)*3 + 30+30 over 8 series-vintages = 18.75; 1.5 x 12 = 18 -> drifted; 01-01 is the 5th newest
    assert by["b1"]["realised_mape"] == 18.75 and by["b1"]["vintages"] == 4 and by["b1"]["drifted"]
    assert by["b1"]["from_vintage"] == "2026-01-08"
    assert by["b2"]["realised_mape"] == 45.0 and by["b2"]["drifted"]
    assert not passed and details["drifted"] == ["b1", "b2"]
    assert details["no_backtest"] == ["b3"] and details["not_scored_yet"] == ["b4"]
    passed, details = batch_drift(acc, {"b1": 12.5, "b2": 30.0}, factor=1.5)
    assert passed and details["drifted"] == []


def test_backtest_mape_by_batch_is_the_mean_of_series():
    champions = pd.DataFrame({"batch": ["b1", "b1", "b2"], "champion_mape": [10.0, 20.0, 7.0]})
    assert backtest_mape_by_batch(champions).to_dict() == {"b1": 15.0, "b2": 7.0}


def test_matches_the_tournament_metrics_on_random_series():
    """Every row equals tournament.series_metrics on the same days (and bias = mean(yhat - y))."""
    import numpy as np

    from capacity_assets.forecasting.tournament import series_metrics
    from capacity_assets.track.accuracy import BUCKET_EDGES

    rng = np.random.default_rng(3)
    series = [("s1", "cpu"), ("s1", "network"), ("s2", "disk")]
    history = pd.DataFrame()
    for k, start in enumerate(["2026-01-01", "2026-01-08"]):
        rec = []
        for s, r in series:
            yhat = np.round(rng.uniform(0, 100, 200), 2)
            rec.append(
                golden(
                    B,
                    s,
                    r,
                    start,
                    yhat,
                    yhat - rng.uniform(0, 10, 200),
                    yhat + rng.uniform(0, 10, 200),
                    run_id=f"r{k}",
                    days=200,
                )
            )
        history = append_vintage(history, as_vintage(cat(*rec)))
    act = cat(
        *[actuals(B, s, r, "2025-12-01", np.round(rng.uniform(0, 100, 260), 2)) for s, r in series]
    )
    act["filled"] = rng.random(len(act)) < 0.1
    act = act[rng.random(len(act)) > 0.1]  # gaps
    acc = score_vintages(history, act)
    m = history.merge(act[~act["filled"]], on=["server_id", "resource", "ds"])
    m["day"] = (m["ds"] - m["vintage"]).dt.days + 1
    checked = 0
    for (v, s, r), g in m.groupby(["vintage", "server_id", "resource"]):
        for name, (lo, hi) in [*zip(HORIZON_BUCKETS, BUCKET_EDGES), ("all", (1, 10**6))]:
            d = g[(g["day"] >= lo) & (g["day"] <= hi)]
            got = acc[
                (acc["vintage"] == v)
                & (acc["server_id"] == s)
                & (acc["resource"] == r)
                & (acc["horizon_bucket"] == name)
            ]
            if d.empty:
                assert got.empty
                continue
            ref = series_metrics(
                d["y"].to_numpy(float),
                d["yhat"].to_numpy(float).round(2),
                d["yhat_lower"].to_numpy(float).round(2),
                d["yhat_upper"].to_numpy(float).round(2),
            )
            row = got.iloc[0]
            assert row["days_scored"] == ref["n_days"]
            assert row["mape"] == pytest.approx(ref["mape"]) and row["wape"] == pytest.approx(
                ref["wape"]
            )
            assert row["band_coverage"] == pytest.approx(ref["coverage"])
            assert row["bias"] == pytest.approx(
                (d["yhat"].to_numpy(float).round(2) - d["y"]).mean()
            )
            checked += 1
    assert checked == 2 * 3 * 5  # every bucket of every series-vintage has actuals
