"""The demo fleet is what every demo, test and benchmark runs on: its contract and its promises."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from capacity_assets.demo.fleet import (
    DEFAULT_END,
    HIERARCHY_COLUMNS,
    METRIC_DTYPES,
    generate_fleet,
    write_fleet,
)
from capacity_assets.schema import RESOURCES

SMALL = dict(servers=12, months=12)


@pytest.fixture(scope="module")
def small():
    return generate_fleet(**SMALL, seed=0)


def _crossing_days(metrics: pd.DataFrame, end: pd.Timestamp, window: int = 60) -> pd.Series:
    """Days after ``end`` at which a linear fit of the last ``window`` days reaches 95 %."""
    last = metrics[metrics["timestamp"] > end - pd.Timedelta(days=window)]
    out = {}
    for key, g in last.groupby(["server_id", "resource"]):
        x = (g["timestamp"] - end).dt.days.to_numpy(float)
        slope, at_end = np.polyfit(x, g["utilization_pct"].to_numpy(), 1)
        out[key] = 0.0 if at_end >= 95 else ((95 - at_end) / slope if slope > 0 else np.inf)
    return pd.Series(out)


def test_columns_dtypes_and_range(small):
    metrics, hierarchy = small
    assert list(metrics.columns) == list(METRIC_DTYPES)
    assert {c: str(t) for c, t in metrics.dtypes.items()} == METRIC_DTYPES
    assert metrics["utilization_pct"].between(0, 100).all()
    assert set(metrics["resource"]) == set(RESOURCES)
    assert (metrics["timestamp"] == metrics["timestamp"].dt.normalize()).all()  # daily
    assert metrics["timestamp"].max() == DEFAULT_END
    assert metrics["timestamp"].min() >= DEFAULT_END - pd.DateOffset(months=12)
    assert not metrics.duplicated(["server_id", "resource", "timestamp"]).any()
    assert list(hierarchy.columns) == HIERARCHY_COLUMNS
    assert set(hierarchy["environment"]) <= {"prod", "staging", "dev"}


def test_every_server_has_all_resources(small):
    metrics, _ = small
    per_server = metrics.groupby("server_id")["resource"].nunique()
    assert len(per_server) == SMALL["servers"] and (per_server == len(RESOURCES)).all()


def test_deterministic_per_seed_and_different_across_seeds(small):
    again = generate_fleet(**SMALL, seed=0)
    pd.testing.assert_frame_equal(small[0], again[0])
    pd.testing.assert_frame_equal(small[1], again[1])
    other = generate_fleet(**SMALL, seed=1)[0]
    assert len(other) != len(small[0]) or not np.allclose(
        other["utilization_pct"].to_numpy(), small[0]["utilization_pct"].to_numpy()
    )


def test_adding_servers_keeps_existing_ids_and_data(small):
    bigger, bigger_h = generate_fleet(servers=15, months=12, seed=0)
    ids = small[0]["server_id"].unique()
    assert list(bigger["server_id"].unique()[:12]) == list(ids)
    assert bigger["server_id"].nunique() == 15
    head = bigger[bigger["server_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(head, small[0])
    assert set(small[1]["server_id"]) <= set(bigger_h["server_id"])


def test_missing_days_exist_including_gaps(small):
    metrics, _ = small
    full_days = (metrics["timestamp"].max() - metrics["timestamp"].min()).days + 1
    counts = metrics.groupby(["server_id", "resource"]).size()
    assert (counts < full_days).mean() > 0.5
    assert 0.005 < 1 - len(metrics) / (full_days * len(counts)) < 0.2
    gaps = metrics.groupby(["server_id", "resource"])["timestamp"].diff().dt.days
    assert (gaps >= 3).any()  # an outage of several days somewhere


def test_some_series_head_for_saturation_most_do_not():
    metrics, _ = generate_fleet(servers=40, months=6, seed=3)
    days = _crossing_days(metrics, DEFAULT_END)
    soon = days[days <= 120]
    assert len(soon) >= 2
    assert soon.index.get_level_values(0).nunique() / 40 < 0.25  # most servers are healthy
    assert (days <= 120).mean() < 0.1


def test_the_tiny_test_fleet_holds_a_saturating_and_a_brand_new_server():
    """The pipeline tests assert on these (risk_exceptions and skipped_series are not empty): if the
    generator changes, this names the cause instead of a dozen pipeline tests failing."""
    from capacity_assets_tests.conftest import TINY, TINY_NEW_SERVER, TINY_SATURATING

    metrics, _ = generate_fleet(**TINY)
    days = _crossing_days(metrics, DEFAULT_END)
    assert (
        days.idxmin() == TINY_SATURATING and 20 < days.min() < 60
    )  # crosses 95 % well inside 90 days
    assert (days <= 120).sum() == 1
    history = metrics.groupby("server_id")["timestamp"].nunique()
    assert (
        history.idxmin() == TINY_NEW_SERVER
        and history.min() < 304 <= history.drop(TINY_NEW_SERVER).min()
    )


def test_hierarchy_covers_about_99_percent():
    metrics, hierarchy = generate_fleet(servers=200, months=1, seed=0)
    servers = set(metrics["server_id"])
    assert set(hierarchy["server_id"]) <= servers
    assert hierarchy["server_id"].is_unique
    assert 0.97 <= len(hierarchy) / len(servers) < 1.0  # a few 'Unassigned' on purpose
    assert hierarchy.notna().all().all()
    assert hierarchy["department"].nunique() >= 6
    # an application belongs to one department and has one manager
    assert (
        (hierarchy.groupby("application")[["department", "app_manager"]].nunique() == 1).all().all()
    )


def test_write_fleet_parquet_glob_readable_and_idempotent(tmp_path):
    out = write_fleet(tmp_path, **SMALL, seed=0, files=3)
    assert len(list((tmp_path / "metrics").glob("*.parquet"))) == 3
    con = duckdb.connect()
    n, servers = con.execute(
        f"select count(*), count(distinct server_id) from read_parquet('{out['metrics']}')"
    ).fetchone()
    assert n == out["rows"] == len(generate_fleet(**SMALL, seed=0)[0]) and servers == 12
    assert list(pd.read_csv(out["hierarchy"]).columns) == HIERARCHY_COLUMNS
    again = write_fleet(tmp_path, servers=6, months=12, seed=0, files=2)  # smaller: stale parts go
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == [
        "part-0.parquet",
        "part-1.parquet",
    ]
    assert (
        con.execute(f"select count(*) from read_parquet('{again['metrics']}')").fetchone()[0]
        == again["rows"]
    )


def test_future_months_add_data_after_end_and_keep_history(small):
    metrics, _ = small
    with_future, _ = generate_fleet(**SMALL, seed=0, future_months=3)
    after = with_future[with_future["timestamp"] > DEFAULT_END]
    assert after["timestamp"].max() == DEFAULT_END + pd.DateOffset(months=3)
    assert after.groupby("server_id")["resource"].nunique().eq(4).all()
    history = with_future[with_future["timestamp"] <= DEFAULT_END].reset_index(drop=True)
    pd.testing.assert_frame_equal(history, metrics)


def test_end_parameter_moves_the_window():
    metrics, _ = generate_fleet(servers=3, months=2, seed=0, end="2025-03-15")
    assert metrics["timestamp"].max() == pd.Timestamp("2025-03-15")
    assert metrics["timestamp"].min() >= pd.Timestamp("2025-01-16")


def test_a_run_without_metrics_writes_the_demo_fleet_once(tmp_path):
    """`capacity run` with no CAPACITY_METRICS on a fresh machine forecasts the built-in demo fleet:
    the first call writes it (metrics and hierarchy), the next finds it and leaves it alone."""
    from capacity_assets.config import CapacitySettings
    from capacity_assets.demo.ensure import ensure_demo_fleet

    settings = CapacitySettings(demo_dir=str(tmp_path / "demo"))
    assert settings.uses_demo
    assert ensure_demo_fleet(settings, servers=2, months=12) is True
    written = duckdb.sql(
        f"select count(distinct server_id) from read_parquet('{settings.metrics_glob}')"
    ).fetchall()[0][0]
    assert written == 2
    assert pd.read_csv(settings.hierarchy_path)["server_id"].nunique() == 2
    assert ensure_demo_fleet(settings, servers=2, months=12) is False
