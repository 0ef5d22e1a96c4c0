"""Each change type on a hand-made golden record, against figures worked out by hand; the risk
list and plan under a scenario; and a scenario without (effective) changes giving the baseline."""

import numpy as np
import pandas as pd
import pytest

from capacity_assets.config import CapacitySettings
from capacity_assets.whatif import compare
from capacity_assets.whatif.apply import apply, outcome, recompute
from capacity_assets.whatif.scenarios import parse

END = pd.Timestamp("2027-01-31")  # last history day; day 1 of the forecast is 2027-02-01
DAYS = 120
SETTINGS = CapacitySettings()  # threshold 95, target 80, risk window 90 days, lead 30 days
HIERARCHY = pd.DataFrame(
    {
        "server_id": ["s1", "s2", "s3", "s4"],
        "department": ["Payments", "Payments", "Data", "Data"],
        "app_manager": ["ann", "ann", "bo", "bo"],
        "application": ["pay", "pay", "etl", "etl"],
        "cpu_cores": [8, 16, 8, None],
        "memory_gb": [64, 64, 64, None],
    }
)


def series(server, resource="cpu", demand=50.0, width=5.0):
    """A flat forecast at ``demand`` with bounds ± ``width`` (``demand`` may be an array)."""
    d = np.broadcast_to(np.asarray(demand, dtype=float), (DAYS,)).copy()
    return pd.DataFrame(
        {
            "batch": "b1",
            "server_id": server,
            "resource": resource,
            "ds": END + pd.to_timedelta(np.arange(1, DAYS + 1), unit="D"),
            "yhat": np.clip(d, 0, 100),
            "yhat_lower": np.clip(d - width, 0, 100),
            "yhat_upper": np.clip(d + width, 0, 100),
            "model": "prophet",
            "champion": "prophet",
            "champion_mape": 5.0,
            "trust": "high",
            "run_id": "r",
            "generated_at": pd.Timestamp("2027-02-01"),
            "demand": d,
            "demand_upper": d + width,
        }
    )


def golden(*parts):
    return pd.concat(parts, ignore_index=True)


def actuals(frame):
    """A week of history at 40 % before the forecast of every series of ``frame``."""
    keys = frame[["batch", "server_id", "resource"]].drop_duplicates()
    days = pd.date_range(END - pd.Timedelta(days=6), END)
    return keys.merge(pd.DataFrame({"ds": days, "y": 40.0, "filled": False}), how="cross")


def scenario(changes):
    return parse({"s": changes})[0]


def at(frame, server, resource, day):
    row = frame[(frame.server_id == server) & (frame.resource == resource) & (frame.ds == day)]
    assert len(row) == 1, (server, resource, day)
    return row.iloc[0]


def run(changes, g, hierarchy=HIERARCHY):
    """(applied, risk, plan, baseline risk, baseline plan) of ``changes`` on golden record ``g``."""
    act = actuals(g)
    base_risk, base_plan = recompute(g, hierarchy, act, SETTINGS)
    applied = apply(scenario(changes), g, hierarchy)
    risk, plan = outcome(applied, base_risk, base_plan, act, SETTINGS)
    return applied, risk, plan, base_risk, base_plan


def test_twenty_points_on_a_server_at_70_breaches_95_on_the_day_they_arrive():
    start = pd.Timestamp("2027-03-01")  # forecast day 29
    g = golden(series("s1", demand=70.0, width=5.0), series("s2", demand=30.0))
    applied, risk, _, base_risk, _ = run(
        [
            {
                "add_load": {
                    "servers": ["s1"],
                    "resources": ["cpu"],
                    "from": "2027-03-01",
                    "points": 20,
                }
            }
        ],
        g,
    )
    assert base_risk.empty  # 75 % upper bound: no breach without the change
    day_before = at(applied.frame, "s1", "cpu", start - pd.Timedelta(days=1))
    assert (day_before.yhat, day_before.yhat_upper) == (70.0, 75.0)
    on = at(applied.frame, "s1", "cpu", start)
    assert (on.yhat, on.yhat_upper, on.demand, on.demand_upper) == (90.0, 95.0, 90.0, 95.0)
    assert len(risk) == 1
    row = risk.iloc[0]
    assert (row.server_id, row.resource) == ("s1", "cpu")
    assert row.first_breach_date == start
    assert row.days_to_breach == (start - END).days == 29
    assert row.severity == "warning"  # the forecast itself reaches 90, only its bound 95
    diff = compare.difference("s", risk, risk.iloc[0:0], base_risk, risk.iloc[0:0])
    assert diff["new"] == [
        {
            "server_id": "s1",
            "resource": "cpu",
            "first_breach_date": "2027-03-01",
            "days_to_breach": 29,
        }
    ]
    assert diff["cleared"] == diff["moved"] == []


def test_a_ramp_reaches_the_full_load_on_its_last_day():
    g = golden(series("s1", demand=70.0, width=5.0))
    applied, risk, *_ = run(
        [
            {
                "add_load": {
                    "where": {"application": "pay"},
                    "resources": "cpu",
                    "from": "2027-03-01",
                    "points": 20,
                    "ramp_days": 10,
                }
            }
        ],
        g,
    )
    # day k of the ramp (k = 1..10) carries 20 * k / 10 points
    assert at(applied.frame, "s1", "cpu", pd.Timestamp("2027-03-05")).yhat == pytest.approx(80.0)
    assert risk.iloc[0].first_breach_date == pd.Timestamp("2027-03-10")  # 75 + 20 = 95 on day 10


def test_percent_adds_a_share_of_the_forecast_itself():
    g = golden(series("s1", demand=60.0, width=4.0))
    applied, *_ = run(
        [
            {
                "add_load": {
                    "servers": "s1",
                    "resources": ["cpu"],
                    "from": "2027-02-01",
                    "percent": 50,
                }
            }
        ],
        g,
    )
    row = at(applied.frame, "s1", "cpu", pd.Timestamp("2027-02-10"))
    assert (row.demand, row.demand_upper, row.yhat_lower) == (90.0, 96.0, 84.0)


def test_a_resize_by_two_halves_utilisation_and_plans_in_the_new_size():
    # memory demand doubles in April; doubling the memory from March halves it from then on
    demand = np.where(
        END + pd.to_timedelta(np.arange(1, DAYS + 1), unit="D") >= "2027-04-01", 180.0, 50.0
    )
    g = golden(series("s1", "memory", demand=demand, width=10.0))
    applied, risk, plan, base_risk, base_plan = run(
        [
            {
                "resize": {
                    "servers": ["s1"],
                    "resources": ["memory"],
                    "from": "2027-03-01",
                    "factor": 2,
                }
            }
        ],
        g,
    )
    before = at(applied.frame, "s1", "memory", pd.Timestamp("2027-02-28"))
    march = at(applied.frame, "s1", "memory", pd.Timestamp("2027-03-01"))
    april = at(applied.frame, "s1", "memory", pd.Timestamp("2027-04-01"))
    assert (before.yhat, before.yhat_upper) == (50.0, 60.0)
    assert (march.yhat, march.yhat_upper, march.yhat_lower) == (25.0, 30.0, 20.0)
    # the golden record stores the lower bound clipped (100 for 170): half of it is 50
    assert (april.yhat, april.yhat_upper, april.yhat_lower) == (90.0, 95.0, 50.0)
    assert (april.demand, april.demand_upper) == (90.0, 95.0)
    # the same resize given as the new size in GB
    by_size, *_ = run([{"resize": {"servers": ["s1"], "from": "2027-03-01", "memory_gb": 128}}], g)
    pd.testing.assert_frame_equal(by_size.frame, applied.frame)
    # baseline: peak 190 % of 64 GB at target 80 is +137.5 %, 88 GB; with 128 GB the peak is
    # 95 %, +18.75 % of 128 GB: 24 GB
    assert base_plan.set_index("server_id").loc["s1", "change_units"] == 88.0
    assert plan.set_index("server_id").loc["s1", "change_units"] == 24.0
    assert float(applied.hierarchy.set_index("server_id").loc["s1", "memory_gb"]) == 128.0
    assert compare.plan_changes(plan, base_plan) == [
        {
            "department": "Payments",
            "resource": "memory",
            "action": "add",
            "change_units": -64.0,
            "unit": "GB",
        }
    ]


def test_a_migration_conserves_the_load_in_units():
    g = golden(series("s1", demand=60.0, width=6.0), series("s2", demand=20.0, width=2.0))
    applied, *_ = run(
        [
            {
                "migrate": {
                    "from_server": "s1",
                    "to_server": "s2",
                    "resources": ["cpu"],
                    "from": "2027-03-01",
                    "share": 0.5,
                }
            }
        ],
        g,
    )
    src = at(applied.frame, "s1", "cpu", pd.Timestamp("2027-03-01"))
    dst = at(applied.frame, "s2", "cpu", pd.Timestamp("2027-03-01"))
    # s1 has 8 cores, s2 16: half of 60 % of 8 cores (2.4 cores) is 15 points on s2
    assert (src.demand, dst.demand) == (30.0, 35.0)
    assert (src.demand_upper, dst.demand_upper) == (33.0, 22.0 + 0.5 * 66.0 * 8 / 16)
    cores = src.demand / 100 * 8 + dst.demand / 100 * 16
    assert cores == pytest.approx(60 / 100 * 8 + 20 / 100 * 16)
    assert applied.notes == []
    # a server without a size: the move is in points, and the notes say so
    g4 = golden(series("s1", demand=60.0), series("s4", demand=20.0))
    unsized, *_ = run(
        [
            {
                "migrate": {
                    "from_server": "s1",
                    "to_server": "s4",
                    "resources": ["cpu"],
                    "from": "2027-03-01",
                    "share": 0.5,
                }
            }
        ],
        g4,
    )
    assert at(unsized.frame, "s4", "cpu", pd.Timestamp("2027-03-01")).demand == 50.0
    assert "percentage points" in unsized.notes[0] and "s1 -> s4 cpu" in unsized.notes[0]


def test_retiring_a_server_ends_its_forecast_and_moves_its_load():
    crossing = np.where(np.arange(1, DAYS + 1) >= 60, 93.0, 50.0)  # s3 breaches on day 60
    g = golden(series("s3", demand=crossing, width=5.0), series("s2", demand=20.0))
    applied, risk, plan, base_risk, base_plan = run(
        [{"retire": {"servers": ["s3"], "from": "2027-03-01", "to_server": "s2"}}], g
    )
    s3 = applied.frame[applied.frame.server_id == "s3"]
    assert s3.ds.max() == pd.Timestamp("2027-02-28")  # ends the day before `from`
    # 50 % of 8 cores is 4 cores, 25 points of s2's 16 cores
    assert at(applied.frame, "s2", "cpu", pd.Timestamp("2027-03-01")).demand == 45.0
    assert list(base_risk.server_id) == ["s3"]
    assert risk.empty  # s3 is gone before its breach; s2 peaks at 20 + 93 * 8 / 16 + 5 = 71.5
    diff = compare.risk_changes(risk, base_risk)
    assert diff["cleared"] == [{"server_id": "s3", "resource": "cpu"}]
    assert set(plan.server_id) == {"s2", "s3"}  # s3 keeps a plan row for its days before


def test_a_changed_breach_date_is_reported_as_moved():
    crossing = np.where(np.arange(1, DAYS + 1) >= 60, 93.0, 70.0)  # breach on day 60
    g = golden(series("s1", demand=crossing, width=5.0))
    _, risk, _, base_risk, _ = run(
        [
            {
                "add_load": {
                    "servers": ["s1"],
                    "resources": ["cpu"],
                    "from": "2027-03-10",
                    "points": 25,
                }
            }
        ],
        g,
    )
    diff = compare.risk_changes(risk, base_risk)
    assert diff["moved"] == [
        {
            "server_id": "s1",
            "resource": "cpu",
            "baseline_first_breach": "2027-04-01",
            "scenario_first_breach": "2027-03-10",
            "days": -22,
        }
    ]
    merged = compare.with_baseline(risk, base_risk)
    assert merged.loc[0, "days_moved"] == -22


@pytest.mark.parametrize("changes", [[], "zero"], ids=["no changes", "changes of zero"])
def test_a_scenario_without_effective_changes_is_the_baseline_exactly(changes):
    crossing = np.where(np.arange(1, DAYS + 1) >= 40, 97.0, 60.0)
    g = golden(
        series("s1", demand=crossing, width=5.0),
        series("s2", "memory", demand=10.0, width=2.0),  # a reclaim
        series("s3", demand=120.0, width=10.0),  # clipped at 100
    )
    if changes == "zero":  # every series selected and recomputed, nothing moved
        changes = [
            {
                "add_load": {
                    "servers": ["s1", "s2", "s3"],
                    "resources": ["cpu", "memory"],
                    "from": "2027-02-01",
                    "points": 0,
                }
            },
            {
                "resize": {
                    "where": {"department": "Data"},
                    "resources": ["cpu"],
                    "from": "2027-02-01",
                    "factor": 1,
                }
            },
        ]
    applied, risk, plan, base_risk, base_plan = run(changes, g)
    pd.testing.assert_frame_equal(applied.frame, g)
    pd.testing.assert_frame_equal(risk, base_risk)
    pd.testing.assert_frame_equal(plan, base_plan)
    assert set(base_plan.action) == {"add", "reclaim"} and len(base_risk) == 2
    empty = {"scenario": "s", "new": [], "cleared": [], "moved": [], "plan": []}
    assert compare.difference("s", risk, plan, base_risk, base_plan) == empty
