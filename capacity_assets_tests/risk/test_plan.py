import numpy as np
import pandas as pd
import pytest

from capacity_assets import schema
from capacity_assets.pipeline import checks as asset_checks
from capacity_assets.risk.plan import capacity_plan, change_units, department_totals
from capacity_assets.risk.thresholds import levels_table

END = pd.Timestamp("2026-10-31")  # last history day; forecast day 1 is 2026-11-01
HORIZON = 180
COLUMNS = [
    "batch",
    "server_id",
    "resource",
    "department",
    "app_manager",
    "threshold",
    "target",
    "peak_demand_upper",
    "needed_by",
    "action",
    "change_pct",
    "change_units",
    "unit",
    "trust",
    "review",
]


def series(server, resource="cpu", upper=50.0, at=None, then=None, trust="high", batch="b1"):
    """demand_upper flat at ``upper``, from day ``at`` on at ``then``; yhat_upper is it clipped to 0–100."""
    day = np.arange(1, HORIZON + 1)
    demand_upper = np.where(
        day >= (at or HORIZON + 1), then if then is not None else upper, upper
    ).astype(float)
    demand = demand_upper - 10.0
    return pd.DataFrame(
        {
            "batch": batch,
            "server_id": server,
            "resource": resource,
            "ds": END + pd.to_timedelta(day, unit="D"),
            "yhat": np.clip(demand, 0, 100),
            "yhat_lower": np.clip(demand - 10, 0, 100),
            "yhat_upper": np.clip(demand_upper, 0, 100),
            "demand": demand,
            "demand_upper": demand_upper,
            "model": "prophet",
            "champion": "prophet",
            "champion_mape": 5.0,
            "trust": trust,
            "run_id": "r",
            "generated_at": pd.Timestamp("2026-11-26"),
        }
    )


def frame(*parts):
    return pd.concat(parts, ignore_index=True)


HIER = pd.DataFrame(
    {
        "server_id": ["big", "idle", "web", "db", "nic", "tiny"],
        "department": ["Payments", "Search", "Search", "Payments", "Search", "Ops"],
        "app_manager": ["ann", "bob", "bob", "ann", "bob", "cid"],
        "cpu_cores": [8, None, 16, None, None, 4],
        "memory_gb": [None, 256, 100, None, None, None],
        "disk_gb": [None, None, None, 500, None, None],
        "network_gbps": [None, None, None, None, 10, None],
    }
)


def row(plan, server, resource="cpu"):
    hit = plan[(plan["server_id"] == server) & (plan["resource"] == resource)]
    assert len(hit) == 1, (server, resource, len(hit))
    return hit.iloc[0]


def test_add_120_percent_at_target_80_is_plus_50_percent_and_4_cores():
    plan = capacity_plan(series("big", upper=50.0, at=60, then=120.0), HIER)
    assert list(plan.columns) == COLUMNS == list(schema.CAPACITY_PLAN)
    r = plan.iloc[0]
    assert (r["department"], r["app_manager"], r["threshold"], r["target"]) == (
        "Payments",
        "ann",
        95.0,
        80.0,
    )
    assert r["peak_demand_upper"] == 120.0  # the unclipped bound: yhat_upper stops at 100
    assert r["action"] == "add" and r["change_pct"] == 50.0
    assert r["change_units"] == 4.0 and r["unit"] == "cores"  # 8 cores * 50 %
    assert r["needed_by"] == pd.Timestamp(
        "2026-11-30"
    )  # crossing on day 60 (2026-12-30) minus 30 days
    assert r["review"] == False and r["trust"] == "high"  # noqa: E712


def test_needed_by_is_first_crossing_minus_lead_days():
    fc = series("big", upper=50.0, at=100, then=95.0)  # reaching the threshold counts
    assert row(capacity_plan(fc, HIER), "big")["needed_by"] == pd.Timestamp(
        "2027-01-09"
    )  # day 100 = 2027-02-08
    assert row(capacity_plan(fc, HIER, lead_days=0), "big")["needed_by"] == pd.Timestamp(
        "2027-02-08"
    )
    # a lead time longer than the time left: the order is already late, and the date says so
    assert row(capacity_plan(fc, HIER, lead_days=120), "big")["needed_by"] == pd.Timestamp(
        "2026-10-11"
    )


def test_the_whole_horizon_counts_not_only_the_risk_window():
    r = row(capacity_plan(series("big", upper=50.0, at=170, then=96.0), HIER), "big")
    assert r["action"] == "add" and r["needed_by"] == END + pd.Timedelta(days=140)
    assert r["change_pct"] == 20.0 and r["change_units"] == 2.0  # 8 * 0.2 = 1.6 -> 2 cores


def test_never_crossing_is_none_with_no_date_and_no_change():
    r = row(capacity_plan(series("big", upper=60.0), HIER), "big")
    assert r["action"] == "none" and pd.isna(r["needed_by"])
    assert r["change_pct"] == 0.0 and r["change_units"] == 0.0 and r["unit"] == "cores"
    assert r["peak_demand_upper"] == 60.0 and r["review"] == False  # noqa: E712


def test_adds_round_away_from_zero():
    plan = capacity_plan(
        frame(
            series("web", "cpu", at=10, then=96.0),  # 16 cores * 20 % = 3.2 -> 4 cores
            series("web", "memory", at=10, then=96.0),  # 100 GB * 20 % = 20 -> 24 GB (steps of 8)
            series("db", "disk", at=10, then=100.0),  # 500 GB * 25 % = 125 -> 128 GB
            series("nic", "network", at=10, then=97.0),  # 10 Gbps * 21.25 % = 2.125 -> 2.2 Gbps
        ),
        HIER,
    )
    got = {
        (r.server_id, r.resource): (r.action, r.change_pct, r.change_units, r.unit)
        for r in plan.itertuples()
    }
    assert got == {
        ("web", "cpu"): ("add", 20.0, 4.0, "cores"),
        ("web", "memory"): ("add", 20.0, 24.0, "GB"),
        ("db", "disk"): ("add", 25.0, 128.0, "GB"),
        ("nic", "network"): ("add", 21.25, 2.2, "Gbps"),
    }
    memory16 = capacity_plan(series("web", "memory", at=10, then=96.0), HIER, round_gb=16.0)
    assert memory16["change_units"].tolist() == [32.0]


def test_reclaim_rounds_toward_zero_to_8_gb():
    plan = capacity_plan(frame(series("idle", "memory", upper=26.0)), HIER)
    r = plan.iloc[0]
    # 26 / 80 - 1 = -67.5 %; 256 GB * 0.675 = 172.8 GB -> 168 GB (21 steps of 8), never 176
    assert (r["action"], r["change_pct"], r["change_units"], r["unit"]) == (
        "reclaim",
        -67.5,
        -168.0,
        "GB",
    )
    assert pd.isna(r["needed_by"]) and r["review"] == False  # noqa: E712
    r = capacity_plan(series("idle", "memory", upper=25.0), HIER).iloc[0]
    assert (r["change_pct"], r["change_units"]) == (-68.75, -176.0)  # 256 * 0.6875 = 176 exactly
    r = capacity_plan(series("nic", "network", upper=13.0), HIER).iloc[0]
    assert (r["change_pct"], r["change_units"]) == (-83.75, -8.3)  # 8.375 Gbps -> 8.3


def test_reclaim_leaves_at_least_one_step():
    r = capacity_plan(series("tiny", upper=0.0), HIER).iloc[0]
    assert (r["action"], r["change_pct"], r["change_units"]) == (
        "reclaim",
        -100.0,
        -3.0,
    )  # 4 cores -> keep 1


def test_reclaim_needs_high_or_medium_trust_and_stays_below_30():
    plan = capacity_plan(
        frame(
            series("a", upper=20.0, trust="low"),
            series("b", upper=20.0, trust="medium"),
            series("c", upper=29.9),
            series("d", upper=30.0),
            series("e", upper=20.0, at=90, then=31.0),
        ),
        HIER,
    )
    actions = dict(zip(plan["server_id"], plan["action"]))
    assert actions == {"a": "none", "b": "reclaim", "c": "reclaim", "d": "none", "e": "none"}
    a = row(plan, "a")
    assert a["change_pct"] == 0.0 and a["review"] == False and pd.isna(a["unit"])  # noqa: E712
    assert row(plan, "b")["change_pct"] == -75.0  # 20 / 80 - 1
    assert capacity_plan(series("d", upper=30.0), HIER, reclaim_below=40.0)["action"].tolist() == [
        "reclaim"
    ]


def test_low_trust_add_is_marked_for_review():
    plan = capacity_plan(
        frame(
            series("big", at=10, then=100.0, trust="low"),
            series("web", at=10, then=100.0, trust="medium"),
        ),
        HIER,
    )
    assert row(plan, "big")["review"] == True and row(plan, "big")["action"] == "add"  # noqa: E712
    assert row(plan, "web")["review"] == False  # noqa: E712
    assert all(c.passed for c in plan_checks(plan, frame(series("big"), series("web"))).values())


def test_missing_size_columns_plan_in_percent_only():
    hier = HIER[["server_id", "department", "app_manager"]]
    plan = capacity_plan(
        frame(series("big", at=60, then=120.0), series("idle", "memory", upper=26.0)), hier
    )
    big, idle = row(plan, "big"), row(plan, "idle", "memory")
    assert big["change_pct"] == 50.0 and np.isnan(big["change_units"]) and pd.isna(big["unit"])
    assert idle["change_pct"] == -67.5 and np.isnan(idle["change_units"]) and pd.isna(idle["unit"])
    # a size for another resource does not help: big has cpu_cores only
    r = row(capacity_plan(series("big", "memory", at=60, then=120.0), HIER), "big", "memory")
    assert np.isnan(r["change_units"]) and pd.isna(r["unit"])


def test_per_server_threshold_99_turns_an_add_into_nothing():
    fc = series("web", at=10, then=96.0)
    assert capacity_plan(fc, HIER)["action"].tolist() == ["add"]
    r = capacity_plan(fc, HIER.assign(threshold_cpu=[None, None, 99.0, None, None, None])).iloc[0]
    assert (r["action"], r["threshold"], r["change_pct"]) == ("none", 99.0, 0.0) and pd.isna(
        r["needed_by"]
    )


def test_per_resource_threshold_and_target_from_levels_table():
    fc = frame(series("big", upper=92.0), series("web", "memory", upper=92.0))
    levels, problems = levels_table(
        fc, HIER, threshold_per_resource={"cpu": 90.0}, target_per_resource={"cpu": 64.0}
    )
    assert problems == []
    plan = capacity_plan(fc, HIER, thresholds=levels, targets=levels)
    big, mem = row(plan, "big"), row(plan, "web", "memory")
    assert (big["threshold"], big["target"], big["action"]) == (90.0, 64.0, "add")
    assert big["needed_by"] == END + pd.Timedelta(days=1 - 30)  # above from day 1
    assert (
        big["change_pct"] == 43.75 and big["change_units"] == 4.0
    )  # 92 / 64 = 1.4375; 8 * 0.4375 = 3.5 -> 4
    assert (mem["threshold"], mem["target"], mem["action"]) == (95.0, 80.0, "none")


def test_target_above_threshold_is_capped():
    fc = series("web", at=10, then=114.0)
    r = capacity_plan(fc, HIER.assign(target_cpu=[None, None, 97.0, None, None, None])).iloc[0]
    assert (r["threshold"], r["target"], r["change_pct"]) == (95.0, 95.0, 20.0)  # 114 / 95 = 1.2
    assert r["change_units"] == 4.0  # 16 * 0.2 = 3.2 -> 4


def test_invalid_per_server_threshold_text_falls_back_and_is_reported():
    fc = series("web", at=10, then=96.0)
    hier = HIER.assign(threshold_cpu=[None, None, "ninety-nine", None, None, None])
    levels, problems = levels_table(fc, hier)
    assert problems == [
        "hierarchy column 'threshold_cpu': 1 invalid value(s) ignored (expected a percentage in "
        "(0, 100]), CAPACITY_THRESHOLD (95) used instead: 'web' = 'ninety-nine'"
    ]
    for plan in (
        capacity_plan(fc, hier),
        capacity_plan(fc, hier, thresholds=levels, targets=levels),
    ):
        assert plan[["threshold", "action"]].values.tolist() == [[95.0, "add"]]


def test_unknown_servers_unassigned_and_order():
    plan = capacity_plan(
        frame(
            series("late", at=150, then=96.0),
            series("soon", at=20, then=96.0),
            series("ghost", upper=40.0),
            series("idle", "memory", upper=26.0),
            series("tiny", upper=0.0),
            series("big", upper=60.0),
        ),
        HIER,
    )
    assert plan["server_id"].tolist() == ["soon", "late", "tiny", "idle", "big", "ghost"]
    assert row(plan, "ghost")[["department", "app_manager"]].tolist() == [
        "Unassigned",
        "Unassigned",
    ]
    assert capacity_plan(series("x", at=5, then=99.0), None)["department"].tolist() == [
        "Unassigned"
    ]


def plan_checks(plan, forecasts) -> dict:
    """The capacity_plan asset checks (pipeline.checks) by name."""
    return {
        c.check_name: c
        for c in (
            asset_checks.every_series_planned(plan, forecasts),
            asset_checks.add_has_needed_by(plan),
            asset_checks.low_trust_reviewed(plan),
        )
    }


def test_plan_checks_name_the_offending_series():
    fc = frame(series("big", at=10, then=100.0, trust="low"), series("web", upper=50.0))
    plan = capacity_plan(fc, HIER)
    assert {name: c.passed for name, c in plan_checks(plan, fc).items()} == {
        "every_series_planned": True,
        "add_has_needed_by": True,
        "low_trust_reviewed": True,
    }
    broken = plan.copy()
    broken.loc[broken["server_id"] == "big", ["needed_by", "review"]] = [pd.NaT, False]
    broken = pd.concat(
        [broken, broken[broken["server_id"] == "big"]], ignore_index=True
    )  # duplicated
    broken = broken[broken["server_id"] != "web"]  # missing
    checks = plan_checks(broken, fc)
    assert checks["every_series_planned"].metadata["series"].value == "big/cpu, web/cpu"
    assert checks["every_series_planned"].description.startswith(
        "2 series without exactly one plan row"
    )
    assert (
        not checks["add_has_needed_by"].passed
        and checks["add_has_needed_by"].metadata["series"].value == "big/cpu"
    )
    assert (
        not checks["low_trust_reviewed"].passed
        and checks["low_trust_reviewed"].metadata["series"].value == "big/cpu"
    )


def test_department_totals():
    plan = capacity_plan(
        frame(
            series("big", at=60, then=120.0),  # Payments cpu +4 cores
            series("db", at=10, then=100.0),  # Payments cpu, no cpu size: unsized add, day 10 - 30
            series("db", "disk", at=10, then=100.0, trust="low"),  # Payments disk +128 GB, review
            series("idle", "memory", upper=26.0),  # Search memory -168 GB
            series("web", "memory", upper=25.0),  # Search memory 100 GB * 68.75 % = 68.75 -> -64 GB
            series("web", upper=50.0),  # Search cpu: nothing
        ),
        HIER,
    )
    totals = department_totals(plan)
    assert list(totals.columns) == [
        "department",
        "resource",
        "unit",
        "series",
        "add_series",
        "add_units",
        "add_unsized",
        "earliest_needed_by",
        "reclaim_series",
        "reclaim_units",
        "reclaim_unsized",
        "review_series",
    ]
    got = totals.set_index(["department", "resource"])
    assert got.index.tolist() == [
        ("Payments", "cpu"),
        ("Payments", "disk"),
        ("Search", "cpu"),
        ("Search", "memory"),
    ]
    assert got.loc[("Payments", "cpu")].tolist() == [
        "cores",
        2,
        2,
        4.0,
        1,
        pd.Timestamp("2026-10-11"),
        0,
        0.0,
        0,
        0,
    ]
    assert got.loc[("Payments", "disk")].tolist() == [
        "GB",
        1,
        1,
        128.0,
        0,
        pd.Timestamp("2026-10-11"),
        0,
        0.0,
        0,
        1,
    ]
    assert got.loc[("Search", "cpu")][["series", "add_series", "reclaim_series"]].tolist() == [
        1,
        0,
        0,
    ]
    assert got.loc[("Search", "memory")].tolist()[:5] == ["GB", 2, 0, 0.0, 0]
    reclaim = got.loc[("Search", "memory")][["reclaim_series", "reclaim_units", "reclaim_unsized"]]
    assert reclaim.tolist() == [2, -232.0, 0]


def test_empty_and_bad_inputs():
    empty_fc = series("x").iloc[:0]
    plan = capacity_plan(empty_fc, HIER)
    assert plan.empty and list(plan.columns) == COLUMNS
    assert department_totals(plan).empty
    assert all(c.passed for c in plan_checks(plan, empty_fc).values())
    with pytest.raises(ValueError, match=r"missing columns \['demand_upper'\]"):
        capacity_plan(series("x").drop(columns="demand_upper"), HIER)
    with pytest.raises(ValueError, match="lead_days"):
        capacity_plan(series("x"), HIER, lead_days=-1)


def test_missing_demand_upper_values_fall_back_to_yhat_upper():
    fc = series("big", at=60, then=120.0)
    fc["demand_upper"] = np.nan
    r = capacity_plan(fc, HIER).iloc[0]
    assert r["peak_demand_upper"] == 100.0 and r["change_pct"] == 25.0 and r["change_units"] == 2.0


def test_change_units_function():
    got = change_units(
        [20.0, -67.5, 0.0, -10.0, 5.0],
        [16, 256, 8, np.nan, 1],
        [1, 8, 1, 1, 1],
        ["add", "reclaim", "none", "reclaim", "add"],
    )
    assert got[[0, 1, 2, 4]].tolist() == [4.0, -168.0, 0.0, 1.0] and np.isnan(got[3])
