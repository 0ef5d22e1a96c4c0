import numpy as np
import pandas as pd
import pytest

from capacity_assets import schema
from capacity_assets.inputs.hierarchy import hierarchy_table
from capacity_assets.risk.breaches import risk_exceptions
from capacity_assets.risk.report import ALL_FILE, write_department_reports
from capacity_assets.risk.thresholds import levels_table

BATCH = "b1"
END = pd.Timestamp("2026-10-31")  # last history day
HORIZON = 120


def forecast(
    server, resource="cpu", base=50.0, width=5.0, upper_at=None, yhat_at=None, model="prophet"
):
    """Flat forecast at ``base``; from day ``upper_at`` on the upper bound reaches 96, from ``yhat_at`` yhat does."""
    day = np.arange(1, HORIZON + 1)
    yhat = np.where(day >= (yhat_at or HORIZON + 1), 97.0, base)
    upper = np.where(day >= (upper_at or HORIZON + 1), 96.0, yhat + width)
    upper = np.maximum(upper, yhat)
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": server,
            "resource": resource,
            "ds": END + pd.to_timedelta(day, unit="D"),
            "yhat": yhat,
            "yhat_lower": yhat - width,
            "yhat_upper": upper,
            "model": model,
            "champion": "prophet",
            "champion_mape": 8.0,
            "trust": "high",
            "run_id": "r",
            "generated_at": pd.Timestamp("2026-11-26"),
            "demand": yhat,
            "demand_upper": upper,
        }
    )


def history(server, resource="cpu", last_week=None, days=30, level=50.0):
    y = np.full(days, level)
    if last_week is not None:
        y[-7:] = last_week
    return pd.DataFrame(
        {
            "batch": BATCH,
            "server_id": server,
            "resource": resource,
            "ds": pd.date_range(END - pd.Timedelta(days=days - 1), periods=days),
            "y": y,
            "filled": False,
        }
    )


HIER = pd.DataFrame(
    {
        "server_id": ["d1", "d90", "d91", "upper", "crit", "hot", "calm"],
        "department": [
            "Payments",
            "Payments",
            "Search",
            "Search",
            "Payments & Billing",
            "Search",
            "Search",
        ],
        "app_manager": ["ann", "ann", "bob", "bob", "cid", "bob", "bob"],
        "application": ["pay", "pay", "idx", "idx", "bill", "idx", "idx"],
    }
)


def scenario():
    fc = pd.concat(
        [
            forecast("d1", upper_at=1),
            forecast("d90", upper_at=90),
            forecast("d91", upper_at=91),
            forecast("upper", upper_at=30),
            forecast("crit", upper_at=20, yhat_at=40, model="challenger:fallback"),
            forecast("hot", base=90.0),
            forecast("calm"),
            forecast("ghost", upper_at=5),
        ],
        ignore_index=True,
    )
    act = pd.concat(
        [history(s) for s in ("d1", "d90", "d91", "upper", "crit", "calm", "ghost")]
        + [history("hot", last_week=96.0)],
        ignore_index=True,
    )
    return schema.conform(fc, schema.FORECASTS), act


def test_risk_windows_severity_and_order():
    fc, act = scenario()
    risk = risk_exceptions(fc, HIER, act)
    assert list(risk.columns) == list(schema.RISK_EXCEPTIONS) + ["application"]
    r = risk.set_index("server_id")
    assert "d91" not in r.index and "calm" not in r.index
    assert r.loc["d1", "days_to_breach"] == 1 and r.loc[
        "d1", "first_breach_date"
    ] == END + pd.Timedelta(days=1)
    assert r.loc["d90", "days_to_breach"] == 90
    assert r.loc["upper", "severity"] == "warning" and r.loc["upper", "peak_upper"] == 96.0
    assert r.loc["crit", "severity"] == "critical" and r.loc["crit", "days_to_breach"] == 20
    assert r.loc["crit", "peak_yhat"] == 97.0 and r.loc["crit", "model"] == "challenger:fallback"
    assert r.loc["hot", "days_to_breach"] == 0 and r.loc["hot", "severity"] == "critical"
    assert r.loc["hot", "first_breach_date"] == END
    assert r.loc["hot", "application"] == "idx"
    # critical first, then soonest
    assert risk["server_id"].tolist() == ["hot", "crit", "d1", "ghost", "upper", "d90"]


def test_server_missing_from_hierarchy_is_unassigned():
    fc, act = scenario()
    r = risk_exceptions(fc, HIER, act).set_index("server_id")
    assert (
        r.loc["ghost", "department"] == "Unassigned"
        and r.loc["ghost", "app_manager"] == "Unassigned"
    )
    assert pd.isna(r.loc["ghost", "application"])


def test_threshold_is_inclusive_and_window_configurable():
    fc, act = scenario()
    assert "upper" in set(risk_exceptions(fc, HIER, act, threshold=96.0)["server_id"])
    assert "upper" not in set(risk_exceptions(fc, HIER, act, threshold=96.01)["server_id"])
    assert "d90" not in set(risk_exceptions(fc, HIER, act, risk_days=89)["server_id"])


def test_last_week_mean_not_max_and_filled_days_ignored():
    fc = schema.conform(forecast("spike"), schema.FORECASTS)
    act = history("spike")
    act.loc[act.index[-1], "y"] = 99.0  # one spike: mean of the week stays low
    assert risk_exceptions(fc, HIER, act).empty
    act = history("spike", last_week=97.0)
    act.loc[act.index[-7:], "filled"] = True  # interpolated, not measured
    assert risk_exceptions(fc, HIER, act).empty


def test_hierarchy_normalisation_and_conflicts():
    raw = pd.DataFrame(
        {
            " Server_ID ": ["a ", "b", "a", "b", "c", "", "d"],
            "Department": ["Pay", "Search", "Ops", "Search", "  ", "x", None],
            "app_manager": ["ann", "bob", "ann", "bob", "cid", "x", "dan"],
            "environment": ["prod"] * 7,
        }
    )
    table, issues = hierarchy_table(raw)
    assert list(table.columns) == ["server_id", "department", "app_manager", "environment"]
    assert table["server_id"].tolist() == ["a", "b", "c", "d"]
    assert table.set_index("server_id")["department"].to_dict() == {
        "a": "Pay",
        "b": "Search",
        "c": "Unassigned",
        "d": "Unassigned",
    }
    assert any("without server_id" in i for i in issues)
    conflict = [i for i in issues if "conflicting" in i]
    assert len(conflict) == 1 and "'a'" in conflict[0] and "'Pay' vs 'Ops'" in conflict[0]


def test_hierarchy_missing_columns_named():
    with pytest.raises(ValueError, match=r"\['app_manager'\].*found \['server_id', 'department'\]"):
        hierarchy_table(pd.DataFrame({"server_id": ["a"], "department": ["x"]}))


def test_department_reports_sorted_and_idempotent(tmp_path):
    fc, act = scenario()
    risk = risk_exceptions(fc, HIER, act)
    (tmp_path / "risk_notes.csv").write_text("mine")  # not ours: must survive
    first = write_department_reports(risk.sample(frac=1, random_state=1), tmp_path)
    names = sorted(p.name for p in first)
    assert names == [
        ALL_FILE,
        "risk_payments.csv",
        "risk_payments_billing.csv",
        "risk_search.csv",
        "risk_unassigned.csv",
    ]
    combined = pd.read_csv(tmp_path / ALL_FILE)
    assert combined["server_id"].tolist() == risk["server_id"].tolist()
    assert pd.read_csv(tmp_path / "risk_search.csv")["server_id"].tolist() == ["hot", "upper"]
    snapshot = {p.name: p.read_bytes() for p in first}
    second = write_department_reports(risk, tmp_path)
    assert {p.name: p.read_bytes() for p in second} == snapshot
    # Search is fixed: its file goes, nothing else of ours or the user's does
    write_department_reports(risk[risk["department"] != "Search"], tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == [
        ALL_FILE,
        "risk_notes.csv",
        "risk_payments.csv",
        "risk_payments_billing.csv",
        "risk_unassigned.csv",
    ]
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_report_writes_header_only(tmp_path):
    risk = schema.empty(schema.RISK_EXCEPTIONS)
    paths = write_department_reports(risk, tmp_path)
    assert [p.name for p in paths] == [ALL_FILE]
    assert pd.read_csv(paths[0]).columns.tolist() == list(schema.RISK_EXCEPTIONS)


def test_every_row_records_its_threshold():
    fc, act = scenario()
    risk = risk_exceptions(fc, HIER, act)
    assert risk["threshold"].tolist() == [95.0] * len(risk)
    assert risk["threshold"].dtype == "float64"


def test_per_server_threshold_turns_a_warning_into_nothing():
    fc, act = scenario()
    hier = HIER.assign(threshold_cpu=[None, None, None, 99.0, 99.0, 97.0, None])
    r = risk_exceptions(fc, hier, act).set_index("server_id")
    assert "upper" not in r.index  # upper bound 96 < 99: was a warning at 95
    assert "hot" not in r.index  # last week 96 < 97, forecast upper 95 < 97: was critical at 95
    # crit: yhat reaches 97 on day 40 but never 99, the upper bound 96 neither: gone too
    assert "crit" not in r.index
    assert r.loc["d1", "threshold"] == 95.0 and r.loc["ghost", "threshold"] == 95.0
    assert pd.isna(
        r.loc["d1", "threshold_cpu"]
    )  # the hierarchy column rides along like any extra column


def test_per_resource_threshold_and_other_resources_untouched():
    fc, act = scenario()
    mem = schema.conform(forecast("d1", resource="memory", upper_at=10), schema.FORECASTS)
    fc = pd.concat([fc, mem], ignore_index=True)
    act = pd.concat([act, history("d1", resource="memory")], ignore_index=True)
    r = risk_exceptions(fc, HIER, act, threshold_per_resource={"cpu": 96.5}).set_index(
        ["server_id", "resource"]
    )
    # cpu at 96.5: upper bounds of 96 no longer count; crit's yhat of 97 still does (critical from day 40)
    assert sorted(s for s, res in r.index if res == "cpu") == ["crit"]
    assert (
        r.loc[("crit", "cpu"), "days_to_breach"] == 40
        and r.loc[("crit", "cpu"), "severity"] == "critical"
    )
    assert r.loc[("crit", "cpu"), "threshold"] == 96.5
    # memory keeps the default 95
    assert (
        r.loc[("d1", "memory"), "days_to_breach"] == 10
        and r.loc[("d1", "memory"), "threshold"] == 95.0
    )


def test_explicit_thresholds_frame_and_gaps_refused():
    fc, act = scenario()
    table, _ = levels_table(
        fc,
        HIER.assign(threshold_cpu=[None, 99.0, None, None, None, None, None]),
        threshold_per_resource={"cpu": 96.0},
    )
    r = risk_exceptions(fc, HIER, act, thresholds=table).set_index("server_id")
    assert (
        "d90" not in r.index
        and r.loc["d1", "threshold"] == 96.0
        and r.loc["upper", "severity"] == "warning"
    )
    with pytest.raises(ValueError, match=r"no threshold for series \['calm/cpu'\]"):
        risk_exceptions(fc, HIER, act, thresholds=table[table["server_id"] != "calm"])


def test_hierarchy_columns_named_like_pipeline_columns_get_one_prefixed_name_in_any_case():
    """'Resource' would collide with 'resource' in DuckDB (names are case-insensitive: it became
    Resource_1), and 'status' was renamed in risk_exceptions only: one name, in every table."""
    raw = pd.DataFrame(
        {
            "server_id": ["a"],
            "department": ["d"],
            "app_manager": ["m"],
            "model": ["R740"],
            "Resource": ["rack 4"],
            "status": ["in service"],
            "First_Flagged": ["x"],
            "rack": ["r4"],
        }
    )
    table, issues = hierarchy_table(raw)
    assert list(table.columns) == [
        "server_id",
        "department",
        "app_manager",
        "hierarchy_model",
        "hierarchy_Resource",
        "hierarchy_status",
        "hierarchy_First_Flagged",
        "rack",
    ]
    assert sum("is named like a pipeline column" in i for i in issues) == 4


def test_reports_are_readable_by_whoever_the_umask_lets_read_a_new_file(tmp_path):
    """The department lists are handed on (a share, a web server); written through mkstemp they were
    owner-only (0600) whatever the umask."""
    import os
    import stat

    fc, act = scenario()
    old = os.umask(0o022)
    try:
        paths = write_department_reports(risk_exceptions(fc, HIER, act), tmp_path)
    finally:
        os.umask(old)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {oct(0o644)}
