"""Every asset check rule, on hand-made frames: it fails where it should and names the series."""

import numpy as np
import pandas as pd

from capacity_assets.pipeline import checks

BATCH = "b1"
END = pd.Timestamp("2026-10-31")


def cat(*frames):
    return pd.concat(frames, ignore_index=True)


def actuals(server, resource, ys):
    ds = pd.date_range(END - pd.Timedelta(days=len(ys) - 1), periods=len(ys))
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": server,
            "resource": resource,
            "ds": ds,
            "y": ys,
            "filled": False,
        }
    )


def test_checks_fail_on_bad_data_and_name_the_series():
    bad = pd.DataFrame(
        {
            "batch": "batch_00",
            "server_id": ["ok", "hot", "dup", "dup"],
            "resource": "cpu",
            "ds": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02"]),
            "y": [50.0, 130.0, 10.0, 11.0],
            "filled": False,
        }
    )
    r = checks.values_in_range(bad)
    assert not r.passed and "hot/cpu" in r.description
    d = checks.one_row_per_day(bad)
    assert not d.passed and "dup/cpu" in d.description
    e = checks.batch_not_empty(bad, ["batch_00", "batch_02"])
    assert not e.passed and "batch_02" in e.description
    assert (
        checks.values_in_range(bad.iloc[:1]).passed and checks.one_row_per_day(bad.iloc[:2]).passed
    )


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


def test_champion_mape_passes_warns_and_errors():
    ok = checks.champion_mape(_champ([5.0, 19.9, 20.0, np.nan]), 20.0, 0.25)
    assert ok.passed and ok.metadata["series_over"].value == 0
    warn = checks.champion_mape(_champ([5.0, 25.0, 1.0, 2.0, 3.0]), 20.0, 0.25)
    assert (
        not warn.passed and warn.severity == checks.WARN and warn.metadata["series_over"].value == 1
    )
    assert warn.metadata["series"].value == "s1/cpu" and "1 of 5 series" in warn.description
    # exactly the share is still WARN; above it is ERROR
    assert checks.champion_mape(_champ([30.0, 1.0, 1.0, 1.0]), 20.0, 0.25).severity == checks.WARN
    err = checks.champion_mape(_champ([30.0, 40.0, 1.0, 1.0]), 20.0, 0.25)
    assert err.severity == checks.ERROR and err.metadata["share_over"].value == 0.5
    assert err.metadata["series"].value == "s1/cpu, s0/cpu"  # worst first


def test_champion_mape_errors_on_a_broken_batch_even_when_the_run_as_a_whole_is_fine():
    """A ranged run checks many batches at once: 2 of 10 series (20 %) overall, but 2 of 4 in batch_b."""
    fine = _champ([1.0] * 6).assign(batch="batch_a")
    broken = _champ([30.0, 40.0, 1.0, 1.0]).assign(
        batch="batch_b", server_id=lambda f: "t" + f["server_id"]
    )
    result = checks.champion_mape(pd.concat([fine, broken], ignore_index=True), 20.0, 0.25)
    assert result.severity == checks.ERROR and result.metadata["share_over"].value == 0.2
    assert result.metadata["batches_over_share"].value == "batch_b"
    assert "more than 25% of batch(es) batch_b (50%)" in result.description


def _forecast(server, days, start=END + pd.Timedelta(days=1)):
    ds = pd.date_range(start, periods=days)
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": server,
            "resource": "cpu",
            "ds": ds,
            "yhat": 50.0,
            "yhat_lower": 40.0,
            "yhat_upper": 60.0,
        }
    )


def test_forecast_checks_name_the_offending_series():
    fc = cat(_forecast("good", 5), _forecast("short", 4))
    fc.loc[0, "yhat_lower"] = 55.0  # above yhat on a 'good' row
    processed = cat(*(actuals(s, "cpu", [1.0]) for s in ("good", "short", "skipped", "lost")))
    skipped = pd.DataFrame(
        {
            "batch": [BATCH],
            "server_id": ["skipped"],
            "resource": ["cpu"],
            "first_ds": [END],
            "last_ds": [END],
            "days": [1],
            "reason": ["too_short"],
        }
    )
    horizon = checks.forecast_horizon(fc, 5)
    assert not horizon.passed and horizon.metadata["series"].value == "short/cpu"
    bounds = checks.forecast_bounds_ordered(fc)
    assert not bounds.passed and bounds.metadata["series"].value == "good/cpu"
    accounted = checks.every_series_accounted(fc, processed, skipped)
    assert not accounted.passed and "lost/cpu" in accounted.description
    good = _forecast("good", 5)
    assert checks.forecast_horizon(good, 5).passed and checks.forecast_bounds_ordered(good).passed
    assert checks.every_series_accounted(good, processed.iloc[:1], skipped).passed
