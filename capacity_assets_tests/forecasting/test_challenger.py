"""The challenger on tiny series whose structure we know: it must extrapolate, see the week, size its
bounds by the noise, keep the contract's split, and turn bad series into fallbacks, not failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capacity_assets.forecasting.engines.base import (
    ForecastConfig,
    backtest_cutoff,
    window_configs,
    with_origin,
)
from capacity_assets.forecasting.engines.registry import run as run_engine
from capacity_assets.schema import ENGINE_RESULTS

CFG = ForecastConfig(seed=7)
DAYS = 420
DS = pd.date_range("2025-01-01", periods=DAYS, freq="D")


def _series(name: str, y, resource: str = "cpu") -> pd.DataFrame:
    return pd.DataFrame(
        {"server_id": name, "resource": resource, "ds": DS, "y": np.asarray(y, float)}
    )


def _batch() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    t = np.arange(DAYS)
    weekend = DS.dayofweek >= 5
    nan = 30 + rng.normal(0, 1, DAYS)
    nan[::3] = np.nan
    return pd.concat(
        [
            _series("trend", 20 + 0.05 * t + rng.normal(0, 0.5, DAYS)),
            _series("weekly", 50 + np.where(weekend, -10.0, 4.0) + rng.normal(0, 1, DAYS)),
            _series("quiet", 40 + rng.normal(0, 0.5, DAYS)),
            _series("noisy", 40 + rng.normal(0, 5, DAYS)),
            _series("const", np.full(DAYS, 12.5)),
            _series("zeros", np.zeros(DAYS), resource="network"),
            _series("holes", nan),
        ],
        ignore_index=True,
    )


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append(("info", msg % args))

    def warning(self, msg, *args):
        self.lines.append(("warning", msg % args))


@pytest.fixture(scope="module")
def run():
    log = _Log()
    return run_engine("challenger", _batch(), CFG, log=log), log


def _rows(out, name, split="future"):
    return out[(out["server_id"] == name) & (out["split"] == split)].sort_values("ds")


def test_contract_columns_and_models(run):
    out, _ = run
    assert list(out.columns) == list(ENGINE_RESULTS)
    models = out.groupby("server_id")["model"].first()
    assert (models[["trend", "weekly", "quiet", "noisy"]] == "challenger").all()


def test_split_dates_and_lengths(run):
    out, _ = run
    cutoff = backtest_cutoff(DS[-1], CFG)
    bt, fu = _rows(out, "trend", "backtest"), _rows(out, "trend", "future")
    assert list(bt["ds"]) == list(DS[DS > cutoff])
    assert list(fu["ds"]) == list(
        pd.date_range(DS[-1] + pd.Timedelta(days=1), periods=CFG.horizon_days)
    )


def test_trend_is_extrapolated(run):
    fu = _rows(run[0], "trend")["yhat"].to_numpy()
    last = 20 + 0.05 * (DAYS - 1)
    assert fu[-30:].mean() > fu[:30].mean() + 2  # keeps rising (damped, not flat)
    assert fu[:30].mean() > last - 1  # starts where the history ends


def test_weekly_pattern_is_recovered(run):
    fu = _rows(run[0], "weekly")
    weekend = fu["ds"].dt.dayofweek >= 5
    gap = fu.loc[~weekend, "yhat"].mean() - fu.loc[weekend, "yhat"].mean()
    assert 10 < gap < 18  # true gap 14


def test_bounds_ordered_and_wider_when_noisier(run):
    out, _ = run
    assert (out["yhat_lower"] <= out["yhat"]).all() and (out["yhat"] <= out["yhat_upper"]).all()
    assert out[["yhat", "yhat_lower", "yhat_upper"]].stack().between(0, 100).all()
    width = {
        n: (_rows(out, n)["yhat_upper"] - _rows(out, n)["yhat_lower"]).mean()
        for n in ("quiet", "noisy")
    }
    assert width["noisy"] > 4 * width["quiet"]


def test_bad_series_fall_back_with_a_reason_without_failing_the_batch(run):
    out, log = run
    models = out.groupby("server_id")["model"].first()
    assert (models[["const", "zeros", "holes"]] == "challenger:fallback").all()
    warnings = " ".join(line for level, line in log.lines if level == "warning")
    assert "const/cpu" in warnings and "zeros/network" in warnings and "missing" in warnings
    assert any("fallbacks" in line for level, line in log.lines if level == "info")  # summary


def test_too_short_series_falls_back():
    short = _series("short", 30 + np.arange(DAYS) * 0.01).iloc[-200:]
    out = run_engine(
        "challenger", pd.concat([short, _series("ok", 30 + np.sin(np.arange(DAYS)))]), CFG
    )
    models = out.groupby("server_id")["model"].first()
    assert models["short"] == "challenger:fallback" and models["ok"] == "challenger"


def test_deterministic_for_a_seed():
    batch = _batch()
    batch = batch[batch["server_id"].isin(["trend", "noisy", "const"])]
    pd.testing.assert_frame_equal(
        run_engine("challenger", batch, CFG), run_engine("challenger", batch, CFG)
    )


def test_disk_fill_and_cleanup_cycle_repeats():
    rng = np.random.default_rng(3)
    fill = 20 + 0.5 * (np.arange(DAYS) % 100)  # fills to ~70 %, cleaned every 100 days
    out = run_engine("challenger", _series("disk", fill + rng.normal(0, 0.5, DAYS), "disk"), CFG)
    fu = _rows(out, "disk")["yhat"].to_numpy()
    assert fu.max() < 80 and fu.min() < 30  # cleaned up again, not filled through 100 %


def test_recent_ramp_is_followed():
    rng = np.random.default_rng(4)
    t = np.arange(DAYS)
    ramp = 50 + 0.2 * np.maximum(t - (DAYS - 100), 0)  # flat, then saturating for 100 days
    fu = _rows(
        run_engine("challenger", _series("ramp", ramp + rng.normal(0, 0.5, DAYS), "memory"), CFG),
        "ramp",
    )
    assert fu["yhat"].iloc[:30].mean() > 68 and fu["yhat"].iloc[-30:].mean() > 80


# ---------------------------------------------------------------- the whole batch at once (issue 25)


def _generated() -> pd.DataFrame:
    """Every path of the model: trends, weeks and month ends, a level shift, yearly seasons, a
    recent ramp, fill-and-clean-up disks (one cleaned up days ago), gaps and missing values, a
    series ending two weeks early, and the ones it refuses (constant, zeros, too short)."""
    rng = np.random.default_rng(25)
    end = pd.Timestamp("2026-03-31")

    def series(name, resource, y, days_early=0):
        ds = pd.date_range(end=end - pd.Timedelta(days=days_early), periods=len(y), freq="D")
        return pd.DataFrame({"server_id": name, "resource": resource, "ds": ds, "y": y})

    def noise(n, sd):
        return rng.normal(0, sd, n)

    t = np.arange(800)
    ds = pd.date_range(end=end, periods=800, freq="D")
    week = np.where(ds.dayofweek >= 5, -6.0, 2.0)
    month_end = np.where(ds.days_in_month - ds.day < 2, 8.0, 0.0)
    yearly = 5 * np.sin(2 * np.pi * ds.dayofyear / 365.25)
    holes = series("holes", "cpu", 30 + 0.01 * t[:450] + week[-450:] + noise(450, 1))
    holes.loc[rng.choice(400, 20, replace=False), "y"] = np.nan
    holes = holes.drop(index=range(100, 105))
    fill = 20 + 0.6 * (t % 90)  # cleaned up every 90 days
    return pd.concat(
        [
            series("trend", "cpu", 20 + 0.05 * t[:420] + noise(420, 0.5)),
            series("weekly", "cpu", 50 + week[-500:] + month_end[-500:] + noise(500, 1)),
            series("late", "cpu", 40 + 0.02 * t[:450] + week[-450:] + noise(450, 2), 16),
            holes,
            series("ramp", "cpu", 45 + 0.2 * np.maximum(t[:600] - 500, 0) + noise(600, 0.5)),
            series("shift", "memory", 30 + 25 * (t[:700] > 500) + 0.01 * t[:700] + noise(700, 1)),
            series("yearly", "memory", 50 + 0.01 * t + yearly + week + noise(800, 1)),
            series("noisy", "memory", 40 + noise(420, 5)),
            series("fill", "disk", fill[21:521] + noise(500, 0.4)),
            series("cleaned", "disk", fill[:549] + noise(549, 0.4)),
            series("const", "disk", np.full(420, 12.5)),
            series("zeros", "network", np.zeros(420)),
            series("short", "network", 10 + noise(200, 1)),
            series("link", "network", 5 + 0.3 * week[-420:] + noise(420, 0.3)),
        ],
        ignore_index=True,
    ).sample(frac=1, random_state=0)  # rows in any order


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.astype({"server_id": str, "resource": str, "split": str})
    return rows.sort_values(["server_id", "resource", "split", "ds"], ignore_index=True)


def assert_windows_are_shorter_backtests(rows, history, reference):
    """Each window's rows are ``reference``'s backtest rows with that window's months (issue 26)."""
    windows = rows[rows["split"] == "window"]
    assert windows["origin"].nunique() >= 2
    for _, c in window_configs(CFG)[1:]:
        ref, _ = reference(history, c)
        ref = with_origin(ref[ref["split"] == "backtest"])
        both = ref.merge(windows, on=["server_id", "resource", "origin", "ds"], how="left")
        assert both["yhat_y"].notna().all()
        np.testing.assert_allclose(both["yhat_y"], both["yhat_x"], rtol=0, atol=1e-6)


def test_the_batch_gives_the_per_series_forecasts():
    """The whole-batch features and predictions against the per-series challenger they replaced:
    the same usable series, the same reasons for the rest, the same forecasts to 1e-6."""
    from capacity_assets.forecasting.engines import challenger
    from capacity_assets_tests.forecasting import challenger_per_series

    history = _generated()
    rows, failed = challenger.predict(history, CFG)
    ref, ref_failed = challenger_per_series.predict(history, CFG)
    assert failed == ref_failed
    assert {k[0] for k in failed} == {"const", "zeros", "short"}
    # each window is the backtest of a shorter backtest period (issue 26)
    assert_windows_are_shorter_backtests(rows, history, challenger_per_series.predict)
    rows = rows[rows["split"] != "window"].drop(columns="origin")
    rows, ref = _sorted(rows), _sorted(ref)
    assert rows[["server_id", "resource", "split"]].equals(ref[["server_id", "resource", "split"]])
    assert (rows["ds"].to_numpy() == ref["ds"].to_numpy()).all()
    cols = ["yhat", "yhat_lower", "yhat_upper"]
    np.testing.assert_allclose(rows[cols].to_numpy(), ref[cols].to_numpy(), rtol=0, atol=1e-6)
