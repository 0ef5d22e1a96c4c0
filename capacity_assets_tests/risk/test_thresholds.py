import numpy as np
import pandas as pd
import pytest

from capacity_assets.risk.thresholds import (
    fleet_problems,
    levels_table,
    per_series,
    series_levels,
    series_sizes,
    setting_name,
)
from capacity_assets.schema import find_column

SERIES = pd.DataFrame(
    {
        "server_id": ["a", "a", "b", "b", "c", "ghost"],
        "resource": ["cpu", "memory", "cpu", "disk", "cpu", "cpu"],
    }
)


def hier(**extra):
    servers = ["a", "b", "c"]
    return pd.DataFrame({"server_id": servers, "department": "Pay", "app_manager": "ann", **extra})


def test_default_only_when_hierarchy_has_no_level_columns():
    levels, problems = series_levels(SERIES, hier(), 95.0)
    assert levels.tolist() == [95.0] * 6 and levels.name == "threshold" and problems == []
    levels, problems = series_levels(SERIES, None, 80.0, column_prefix="target_")
    assert levels.tolist() == [80.0] * 6 and levels.name == "target" and problems == []


def test_per_resource_then_per_server_override():
    h = hier(threshold_cpu=[99.0, None, 90.0], threshold_disk=[None, 85.0, None])
    levels, problems = series_levels(
        SERIES, h, 95.0, {"cpu": 97.0, "memory": None, "network": 60.0}
    )
    # a/cpu: server 99; a/memory: per-resource None = not set -> default; b/cpu: blank -> per-resource 97;
    # b/disk: server 85; c/cpu: server 90; ghost (not in hierarchy)/cpu: per-resource 97
    assert levels.tolist() == [99.0, 95.0, 97.0, 85.0, 90.0, 97.0]
    assert problems == []


def test_result_aligned_to_series_index_and_rows():
    rows = SERIES.iloc[[4, 0, 0]].set_axis([10, 11, 12])  # one row per day works too
    levels, _ = series_levels(rows, hier(threshold_cpu=[99.0, None, 90.0]), 95.0)
    assert levels.index.tolist() == [10, 11, 12] and levels.tolist() == [90.0, 99.0, 99.0]


def test_invalid_per_server_values_fall_back_and_are_reported():
    h = hier(threshold_cpu=["ninety", "150", " 92.5 % "])
    levels, problems = series_levels(SERIES, h, 95.0, {"cpu": 96.0})
    assert levels.tolist() == [96.0, 95.0, 96.0, 95.0, 92.5, 96.0]
    assert problems == [
        "hierarchy column 'threshold_cpu': 2 invalid value(s) ignored (expected a percentage in "
        "(0, 100]), CAPACITY_THRESHOLD_CPU (96) used instead: 'a' = 'ninety', 'b' = '150'"
    ]
    _, problems = series_levels(
        SERIES, hier(target_cpu=[0.0, -5.0, 100.0]), 80.0, column_prefix="target_"
    )
    assert problems == [
        "hierarchy column 'target_cpu': 2 invalid value(s) ignored (expected a percentage in "
        "(0, 100]), CAPACITY_TARGET (80) used instead: 'a' = 0.0, 'b' = -5.0"
    ]


def test_problems_only_for_servers_in_the_series_and_whole_file_separately():
    h = hier(threshold_cpu=[None, None, "x"], memory_gb=["lots", 64, None])
    _, problems = series_levels(SERIES[SERIES["server_id"] == "a"], h, 95.0)
    assert problems == []
    assert fleet_problems(["a", "b", "c"], h) == [
        "hierarchy column 'threshold_cpu': 1 invalid value(s) ignored (expected a percentage in (0, 100]), "
        "CAPACITY_THRESHOLD (95) used instead: 'c' = 'x'",
        "hierarchy column 'memory_gb': 1 invalid value(s) ignored (expected a positive number), "
        "planned in percent only: 'a' = 'lots'",
    ]
    # a target over its threshold, from the settings alone, for servers the hierarchy does not list too
    assert fleet_problems(
        ["a", "zz"], None, threshold=90.0, target=92.0, target_per_resource={"disk": 85.0}
    ) == [
        "target above threshold for 6 series, capped at the threshold: a/cpu (92 > 90), a/memory (92 > 90), "
        "a/network (92 > 90), zz/cpu (92 > 90), zz/memory (92 > 90), zz/network (92 > 90)"
    ]


def test_many_invalid_values_are_summarised():
    n = 13
    h = pd.DataFrame(
        {
            "server_id": [f"s{i:02d}" for i in range(n)],
            "department": "d",
            "app_manager": "m",
            "threshold_network": ["bad"] * n,
        }
    )
    series = pd.DataFrame({"server_id": h["server_id"], "resource": "network"})
    _, problems = series_levels(series, h, 95.0)
    assert len(problems) == 1 and problems[0].startswith(
        "hierarchy column 'threshold_network': 13 invalid"
    )
    assert "'s09' = 'bad' and 3 more" in problems[0] and "'s10'" not in problems[0]


def test_column_names_match_ignoring_case_and_blanks():
    h = hier(**{" Threshold_CPU ": [99.0, None, None], "MEMORY_GB": [128, None, None]})
    levels, _ = series_levels(SERIES, h, 95.0)
    assert levels.tolist()[0] == 99.0
    sizes, problems = series_sizes(SERIES, h)
    assert sizes.tolist()[1] == 128.0 and np.isnan(sizes.tolist()[0]) and problems == []


def test_find_column_prefers_the_exact_name_then_ignores_case_and_blanks():
    # one rule for the threshold and the notify hierarchy columns (schema.find_column)
    df = pd.DataFrame(columns=[" Threshold_CPU ", "threshold_cpu", "App_Manager_Email "])
    assert find_column(df, "threshold_cpu") == "threshold_cpu"
    assert find_column(df.drop(columns="threshold_cpu"), "threshold_cpu") == " Threshold_CPU "
    assert find_column(df, "app_manager_email") == "App_Manager_Email "
    assert find_column(df, " APP_MANAGER_EMAIL") == "App_Manager_Email "
    assert find_column(df, "department_head_email") is None


def test_levels_from_a_text_column_as_stored_by_duckdb():
    h = hier(threshold_cpu=pd.Series(["99", None, ""], dtype="string"))
    levels, problems = series_levels(SERIES, h, 95.0)
    assert levels.tolist() == [99.0, 95.0, 95.0, 95.0, 95.0, 95.0] and problems == []


def test_bad_settings_raise_naming_the_setting():
    with pytest.raises(
        ValueError, match=r"CAPACITY_THRESHOLD=0: expected a percentage in \(0, 100\]"
    ):
        series_levels(SERIES, None, 0)
    with pytest.raises(ValueError, match="CAPACITY_TARGET_DISK=120"):
        series_levels(SERIES, None, 80.0, {"disk": 120}, column_prefix="target_")
    with pytest.raises(ValueError, match="unknown resource 'gpu'"):
        series_levels(SERIES, None, 95.0, {"gpu": 90})
    assert setting_name("threshold_", "network") == "CAPACITY_THRESHOLD_NETWORK"


def test_sizes_known_unknown_and_invalid():
    h = hier(cpu_cores=[8, "eight", None], disk_gb=[None, 500.0, None])
    sizes, problems = series_sizes(SERIES, h)
    assert sizes.iloc[[0, 3]].tolist() == [8.0, 500.0]
    assert sizes.iloc[[1, 2, 4, 5]].isna().all()
    assert problems == [
        "hierarchy column 'cpu_cores': 1 invalid value(s) ignored (expected a positive number), "
        "planned in percent only: 'b' = 'eight'"
    ]


def test_levels_table_caps_target_at_threshold_and_reports():
    h = hier(target_cpu=[None, None, 97.0])
    table, problems = levels_table(
        SERIES,
        h,
        threshold=95.0,
        threshold_per_resource={"memory": 70.0},
        target=80.0,
        target_per_resource={"disk": 60.0},
    )
    t = table.set_index(["server_id", "resource"])
    assert (
        list(table.columns) == ["server_id", "resource", "threshold", "target"] and len(table) == 6
    )
    assert t.loc[("a", "memory")].tolist() == [70.0, 70.0]
    assert t.loc[("b", "disk")].tolist() == [95.0, 60.0]
    assert t.loc[("c", "cpu")].tolist() == [95.0, 95.0]
    assert t.loc[("a", "cpu")].tolist() == [95.0, 80.0]
    assert problems == [
        "target above threshold for 2 series, capped at the threshold: "
        "a/memory (80 > 70), c/cpu (97 > 95)"
    ]


def test_per_series_accepts_number_series_and_frame_and_refuses_gaps():
    table, _ = levels_table(SERIES, None)
    assert per_series(table, SERIES, "threshold").tolist() == [95.0] * 6
    assert per_series(90, SERIES, "threshold").tolist() == [90.0] * 6
    by_key = table.set_index(["server_id", "resource"])["target"]
    assert per_series(by_key, SERIES.iloc[::-1], "target").tolist() == [80.0] * 6
    with pytest.raises(ValueError, match=r"no threshold for series \['ghost/cpu'\]"):
        per_series(table[table["server_id"] != "ghost"], SERIES, "threshold")
    with pytest.raises(ValueError, match="outside"):
        per_series(table.assign(threshold=101.0), SERIES, "threshold")
    with pytest.raises(ValueError, match="conflicting"):
        per_series(pd.concat([table, table.assign(threshold=90.0)]), SERIES, "threshold")
