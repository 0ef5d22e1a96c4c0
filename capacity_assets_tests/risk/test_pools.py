"""Pools (risk/pools.py) on hand-made golden records, against sums and dates worked out by hand;
and under a what-if scenario (a resize adds capacity, a migration between pools keeps the load)."""

import numpy as np
import pandas as pd
import pytest

from capacity_assets.config import CapacitySettings
from capacity_assets.risk.pools import pools, resizes, thresholds
from capacity_assets.whatif.apply import apply
from capacity_assets.whatif.scenarios import parse

DAY1 = pd.Timestamp("2027-02-01")
DAYS = 10
LEVELS = {"cpu": 95.0, "memory": 90.0, "disk": 95.0, "network": 95.0}
HIERARCHY = pd.DataFrame(
    {
        "server_id": ["a", "b", "c", "d", "e", "lone"],
        "department": "Payments",
        "app_manager": "ann",
        "Pool ": ["web", "web", "web", " db ", "db", ""],  # a spreadsheet header, blanks around
        "cpu_cores": [10, 20, None, 8, 8, 4],
        "memory_gb": [64, 64, 64, 32, 32, 16],
    }
)


def series(server, resource="cpu", demand=50.0, width=10.0):
    """A forecast of ``demand`` (a number or one value per day), upper bound ``width`` above."""
    d = np.broadcast_to(np.asarray(demand, dtype=float), (DAYS,)).copy()
    return pd.DataFrame(
        {
            "batch": "b1",
            "server_id": server,
            "resource": resource,
            "ds": DAY1 + pd.to_timedelta(np.arange(DAYS), unit="D"),
            "yhat": np.clip(d, 0, 100),
            "yhat_lower": np.clip(d - width, 0, 100),
            "yhat_upper": np.clip(d + width, 0, 100),
            "model": "prophet",
            "champion": "prophet",
            "champion_mape": 5.0,
            "trust": "high",
            "run_id": "r",
            "generated_at": DAY1,
            "demand": d,
            "demand_upper": d + width,
        }
    )


def golden(*parts):
    return pd.concat(parts, ignore_index=True)


def row(outlook, pool, resource="cpu"):
    hit = outlook[(outlook["pool"] == pool) & (outlook["resource"] == resource)]
    assert len(hit) == 1, outlook
    return hit.iloc[0]


def test_pool_sums_match_hand_sums_and_unsized_servers_are_counted_not_summed():
    g = golden(
        series("a", demand=50.0),  # 10 cores: 5.0 demand, 6.0 upper
        series("b", demand=40.0),  # 20 cores: 8.0 demand, 10.0 upper
        series("c", demand=90.0),  # no size: counted, not summed
        series("a", "memory", demand=50.0, width=0.0),  # 64 GB: 32 GB
        series("b", "memory", demand=25.0, width=0.0),  # 64 GB: 16 GB
        series("lone", demand=99.0),  # no pool: in no pool's sums
    )
    outlook, daily = pools(g, HIERARCHY, LEVELS)
    assert set(zip(outlook["pool"], outlook["resource"])) == {("web", "cpu"), ("web", "memory")}
    cpu = row(outlook, "web")
    assert (cpu["servers"], cpu["servers_without_size"]) == (3, 1)
    assert cpu["unit"] == "cores"
    assert cpu["capacity_units"] == pytest.approx(30.0)
    assert cpu["threshold"] == 95.0 and cpu["threshold_units"] == pytest.approx(28.5)
    assert cpu["peak_demand_units"] == pytest.approx(13.0)
    assert cpu["peak_demand_upper_units"] == pytest.approx(16.0)
    assert cpu["headroom_units"] == pytest.approx(12.5)  # 28.5 - 16
    # each server's own peak upper demand: a 6, b 10 -> median 8; 12.5 / 8 -> 1 more server
    assert cpu["median_server_units"] == pytest.approx(8.0)
    assert cpu["servers_that_fit"] == 1
    assert pd.isna(cpu["first_breach_date"]) and pd.isna(cpu["days_to_breach"])
    # memory's own threshold (90) on a's and b's 128 GB: c has no memory forecast, so its 64 GB
    # are not capacity the pool's forecast load can be judged against
    mem = row(outlook, "web", "memory")
    assert mem["servers"] == 2 and mem["capacity_units"] == pytest.approx(128.0)
    assert mem["threshold_units"] == pytest.approx(115.2)
    assert mem["peak_demand_units"] == pytest.approx(48.0)  # 32 + 16 (c has no memory series)
    assert mem["unit"] == "GB"
    web = daily[(daily["pool"] == "web") & (daily["resource"] == "cpu")]
    assert len(web) == DAYS and (web["scenario"] == "").all()
    assert web["capacity_units"].tolist() == [30.0] * DAYS
    assert web["demand_units"].tolist() == pytest.approx([13.0] * DAYS)
    assert web["demand_upper_units"].tolist() == pytest.approx([16.0] * DAYS)
    assert web["threshold_units"].tolist() == pytest.approx([28.5] * DAYS)


def test_a_pools_breach_date_and_the_servers_that_still_fit_are_the_hand_computed_ones():
    # pool db: d and e, 8 cores each, 16 in all, threshold 95 % -> 15.2 cores
    # d at 70 % (5.6 cores) gets +20 points from day 4 (7.2 cores); e stays at 80 % (6.4 cores);
    # upper bounds 10 points above: 6.4 + 7.2 = 13.6 before day 4, 8.0 + 7.2 = 15.2 from day 4
    d = np.where(np.arange(DAYS) >= 3, 90.0, 70.0)
    outlook, daily = pools(
        golden(series("d", demand=d), series("e", demand=80.0)), HIERARCHY, LEVELS
    )
    db = row(outlook, "db")  # the pool's name without the blanks around it
    assert db["capacity_units"] == pytest.approx(16.0)
    assert db["first_breach_date"] == DAY1 + pd.Timedelta(days=3)  # the day upper reaches 15.2
    assert db["days_to_breach"] == 3
    # the forecast itself: 7.2 + 6.4 = 13.6 < 15.2, never
    assert pd.isna(db["forecast_breach_date"])
    assert db["headroom_units"] == pytest.approx(0.0, abs=1e-9)
    assert db["servers_that_fit"] == 0
    # e at 100 % with its upper bound at 110 % (unclipped: 8.8 cores): the upper demand is at the
    # threshold from day 1 (6.4 + 8.8 = 15.2), the forecast from day 4 (7.2 + 8.0), and the pool
    # is short by 1.6 cores at its peak (8.0 + 8.8 = 16.8)
    outlook, _ = pools(golden(series("d", demand=d), series("e", demand=100.0)), HIERARCHY, LEVELS)
    db = row(outlook, "db")
    assert db["first_breach_date"] == DAY1 and db["days_to_breach"] == 0
    assert db["forecast_breach_date"] == DAY1 + pd.Timedelta(days=3)
    assert db["peak_demand_upper_units"] == pytest.approx(16.8)
    assert db["headroom_units"] == pytest.approx(-1.6)
    assert db["servers_that_fit"] == 0


def test_servers_that_fit_counts_whole_servers_of_the_median_peak():
    # web: a 10 cores at 20 % (+10 upper: 3.0), b 20 cores at 20 % (6.0): 9 of 28.5 -> 19.5 left;
    # median of 3 and 6 is 4.5 -> 4 more servers (4.33)
    outlook, _ = pools(
        golden(series("a", demand=20.0), series("b", demand=20.0)), HIERARCHY, LEVELS
    )
    web = row(outlook, "web")
    assert web["headroom_units"] == pytest.approx(19.5)
    assert web["median_server_units"] == pytest.approx(4.5)
    assert web["servers_that_fit"] == 4


def test_no_pool_column_or_no_sized_server_gives_an_honest_answer():
    g = golden(series("a"), series("c"))
    outlook, daily = pools(g, HIERARCHY.drop(columns="Pool "), LEVELS)
    assert outlook.empty and daily.empty
    assert list(outlook.columns)[:3] == ["scenario", "pool", "resource"]
    only_c, _ = pools(golden(series("c")), HIERARCHY, LEVELS)  # c has no size
    web = row(only_c, "web")
    assert (web["servers"], web["servers_without_size"], web["capacity_units"]) == (1, 1, 0.0)
    assert pd.isna(web["headroom_units"]) and pd.isna(web["servers_that_fit"])
    assert pd.isna(web["first_breach_date"])


def test_thresholds_come_from_the_per_resource_settings():
    cfg = CapacitySettings(threshold=90.0, threshold_memory=85.0)
    assert thresholds(cfg) == {"cpu": 90.0, "memory": 85.0, "disk": 90.0, "network": 90.0}


SCENARIOS = parse(
    {
        "bigger-a": [
            {"resize": {"servers": ["a"], "resources": ["cpu"], "from": "2027-02-06", "factor": 2}}
        ],
        "move-d": [
            {
                "migrate": {
                    "from_server": "d",
                    "to_server": "a",
                    "resources": ["cpu"],
                    "from": "2027-02-06",
                    "share": 0.5,
                }
            }
        ],
    }
)


def scenario_pools(name, g):
    scenario = next(s for s in SCENARIOS if s.name == name)
    applied = apply(scenario, g, HIERARCHY)
    resized = resizes(scenario, HIERARCHY, set(g["server_id"]))
    return pools(applied.frame, HIERARCHY, LEVELS, resized, scenario=name)


def test_a_resize_adds_capacity_from_its_day_and_keeps_the_demand_in_units():
    g = golden(series("a", demand=60.0), series("b", demand=40.0))
    _, base = pools(g, HIERARCHY, LEVELS)
    outlook, daily = scenario_pools("bigger-a", g)
    web = daily[daily["resource"] == "cpu"].reset_index(drop=True)
    assert (web["scenario"] == "bigger-a").all()
    # a: 10 cores until 2027-02-05, 20 from 2027-02-06 (day 6); b 20 cores throughout
    assert web["capacity_units"].tolist() == [30.0] * 5 + [40.0] * 5
    # a at 60 % of 10 cores = 6 cores; resized it is at 30 % of 20 cores: the same 6 cores
    assert web["demand_units"].tolist() == pytest.approx(base["demand_units"].tolist())
    assert web["demand_units"].tolist() == pytest.approx([14.0] * DAYS)
    assert row(outlook, "web")["capacity_units"] == pytest.approx(30.0)  # first day's


def test_a_migration_between_pools_keeps_the_load_in_units():
    g = golden(series("a", demand=30.0), series("b", demand=30.0), series("d", demand=80.0))
    _, base = pools(g, HIERARCHY, LEVELS)
    _, moved = scenario_pools("move-d", g)

    def units(frame, pool):
        return frame[(frame["pool"] == pool) & (frame["resource"] == "cpu")][
            "demand_units"
        ].to_numpy()

    # half of d's 6.4 cores (3.2) leaves db for a in web from day 6
    assert units(moved, "db") == pytest.approx([6.4] * 5 + [3.2] * 5)
    assert units(moved, "web") == pytest.approx([9.0] * 5 + [12.2] * 5)
    total = units(moved, "db") + units(moved, "web")
    assert total == pytest.approx(units(base, "db") + units(base, "web"))
