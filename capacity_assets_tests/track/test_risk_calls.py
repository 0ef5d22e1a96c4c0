"""Risk calls by hand: risk window 5 days, vintages 01-01 (window 01-01..01-05, final: actuals run
to 01-10) and 01-08 (window 01-08..01-12, so far)."""

import math

import pandas as pd

from capacity_assets.track.contracts import RISK_CALL_OUTCOMES, RISK_CALL_SCORES, RISK_HISTORY
from capacity_assets.track.risk_calls import (
    append_risk_vintage,
    as_risk_vintage,
    risk_call_outcomes,
    risk_call_scores,
)
from capacity_assets.track.vintages import append_vintage, as_vintage

from .helpers import cat, day, golden, no_risk, risk_row, series_from

B = "b1"
RISK_DAYS = 5
SERVERS = ["tp", "fp", "fn", "late", "filled", "thr99", "gone"]
LEVELS = pd.DataFrame(
    {
        "server_id": SERVERS,
        "resource": "cpu",
        "threshold": [99.0 if s == "thr99" else 95.0 for s in SERVERS],
    }
)
HIERARCHY = pd.DataFrame(
    {
        "server_id": SERVERS,
        "department": ["Pay", "Pay", "Search", "Search", "Search", "Search", "Pay"],
        "app_manager": ["ann", "ann", "bob", "bob", "bob", "bob", "ann"],
    }
)


def golden_record(start, run_id):
    return cat(*[golden(B, s, "cpu", start, 80, 70, 90, run_id=run_id) for s in SERVERS])


def processed():
    end = "2026-01-10"
    return cat(
        series_from(B, "tp", "cpu", "2025-12-25", end, 80, {"2026-01-03": 96, "2026-01-09": 97}),
        series_from(B, "fp", "cpu", "2025-12-25", end, 80, {"2026-01-02": 90}),
        series_from(B, "fn", "cpu", "2025-12-25", end, 80, {"2026-01-05": 95}),  # >= is a crossing
        series_from(
            B, "late", "cpu", "2025-12-25", end, 80, {"2026-01-06": 99}
        ),  # day 6: after the window
        series_from(
            B, "filled", "cpu", "2025-12-25", end, 80, {"2026-01-02": 99}, filled=["2026-01-02"]
        ),
        series_from(
            B, "thr99", "cpu", "2025-12-25", end, 80, {"2026-01-04": 97}
        ),  # below its own 99
        series_from(B, "gone", "cpu", "2025-12-25", "2025-12-31", 80),  # no actual in any window
    )


def build():
    history, risk_history = pd.DataFrame(), pd.DataFrame()
    runs = [
        ("2026-01-01", "r1", cat(risk_row(B, "tp"), risk_row(B, "fp"), risk_row(B, "gone"))),
        ("2026-01-08", "r2", risk_row(B, "tp", department="Pay (new)")),
    ]
    for start, run_id, risk in runs:
        fc = golden_record(start, run_id)
        history = append_vintage(history, as_vintage(fc, LEVELS))
        risk_history = append_risk_vintage(risk_history, as_risk_vintage(risk, fc), history)
    return history, risk_history


def test_risk_history_rows_and_rerun_replacement():
    history, rh = build()
    assert list(rh.columns) == list(RISK_HISTORY)
    assert rh[["vintage", "run_id", "server_id"]].astype(str).values.tolist() == [
        ["2026-01-01", "r1", "fp"],
        ["2026-01-01", "r1", "gone"],
        ["2026-01-01", "r1", "tp"],
        ["2026-01-08", "r2", "tp"],
    ]
    # a re-run of 01-08 that flags nothing removes that vintage's flags, and only those
    rerun = golden_record("2026-01-08", "r2b")
    history2 = append_vintage(history, as_vintage(rerun, LEVELS))
    rh2 = append_risk_vintage(rh, as_risk_vintage(no_risk(), rerun), history2)
    assert rh2["vintage"].tolist() == [day("2026-01-01")] * 3
    assert append_risk_vintage(rh2, as_risk_vintage(no_risk(), rerun), history2).equals(
        rh2
    )  # idempotent
    # retention follows forecast_history: keep=1 drops 01-01's flags
    rh3 = append_risk_vintage(
        rh,
        as_risk_vintage(risk_row(B, "tp"), golden_record("2026-01-08", "r2")),
        append_vintage(history, pd.DataFrame(), keep=1),
    )
    assert rh3["vintage"].tolist() == [day("2026-01-08")]


def test_outcomes_by_hand():
    history, rh = build()
    out = risk_call_outcomes(rh, history, processed(), risk_days=RISK_DAYS, hierarchy=HIERARCHY)
    assert out.dtypes.astype(str).to_dict() == RISK_CALL_OUTCOMES and len(out) == 2 * len(SERVERS)
    v1 = out[out["vintage"] == day("2026-01-01")].set_index("server_id")
    assert v1["flagged"].to_dict() == {
        "fn": False,
        "fp": True,
        "filled": False,
        "gone": True,
        "late": False,
        "thr99": False,
        "tp": True,
    }
    assert v1["crossed"].to_dict() == {
        "fn": True,
        "fp": False,
        "filled": False,
        "gone": False,
        "late": False,
        "thr99": False,
        "tp": True,
    }
    assert v1.loc["tp", "first_crossed"] == day("2026-01-03") and v1.loc[
        "fn", "first_crossed"
    ] == day("2026-01-05")
    assert (
        v1.loc["thr99", "threshold"] == 99.0
    )  # the series' own threshold, recorded with the vintage
    assert v1.loc["gone", "days_measured"] == 0 and v1.loc["tp", "days_measured"] == 5
    assert v1.loc["filled", "days_measured"] == 4  # the filled day is not a measurement
    assert set(v1["status"]) == {"final"} and set(v1["window_end"]) == {day("2026-01-05")}
    assert v1.loc["fn", "department"] == "Search"  # unflagged: today's hierarchy
    v2 = out[out["vintage"] == day("2026-01-08")].set_index("server_id")
    assert set(v2["status"]) == {"so_far"}  # window to 01-12, actuals to 01-10
    assert (
        v2.loc["tp", "crossed"] and v2.loc["tp", "department"] == "Pay (new)"
    )  # flagged: as recorded
    assert v2["crossed"].sum() == 1


def test_precision_and_recall_by_vintage_and_department():
    history, rh = build()
    out = risk_call_outcomes(rh, history, processed(), risk_days=RISK_DAYS, hierarchy=HIERARCHY)
    s = risk_call_scores(out)
    assert list(s.columns) == ["vintage", *RISK_CALL_SCORES]
    v1, v2 = s.iloc[0], s.iloc[1]
    # 01-01: tp flagged and crossed, fp flagged and not, fn crossed unflagged; gone not scored
    assert (v1["series"], v1["tp"], v1["fp"], v1["fn"]) == (6, 1, 1, 1)
    assert v1["precision"] == 0.5 and v1["recall"] == 0.5 and bool(v1["final"])
    assert (v2["tp"], v2["fp"], v2["fn"], v2["precision"], v2["recall"]) == (1, 0, 0, 1.0, 1.0)
    assert not v2["final"]
    d = risk_call_scores(out, by=("vintage", "department"))
    d1 = d[d["vintage"] == day("2026-01-01")].set_index("department")
    assert (d1.loc["Pay", "tp"], d1.loc["Pay", "fp"], d1.loc["Pay", "fn"]) == (1, 1, 0)
    assert d1.loc["Pay", "precision"] == 0.5 and d1.loc["Pay", "recall"] == 1.0
    assert (d1.loc["Search", "tp"], d1.loc["Search", "fn"], d1.loc["Search", "recall"]) == (
        0,
        1,
        0.0,
    )
    assert math.isnan(d1.loc["Search", "precision"])


def test_unflagged_series_without_hierarchy_are_unassigned():
    history, rh = build()
    out = risk_call_outcomes(rh, history, processed(), risk_days=RISK_DAYS)
    assert set(out.loc[~out["flagged"], "department"]) == {"Unassigned"}


def test_the_one_row_per_vintage_and_series_read_gives_the_outcomes_of_every_forecast_day(tmp_path):
    """The track assets read forecast_history from the database as one row per vintage and series
    (180 times fewer rows after 26 weeks); risk calls and the vintage register must not change."""
    import duckdb

    from capacity_assets.store.history import read_batches, read_series_vintages
    from capacity_assets.track.vintages import vintages_of

    history, rh = build()
    # one series' forecast starts a day after its vintage: its window starts on its own first day
    history = history[~((history["server_id"] == "fn") & (history["ds"] == history["vintage"]))]
    history = history.sample(frac=1, random_state=1)  # stored order is not the contract's
    db = str(tmp_path / "cap.duckdb")
    with duckdb.connect(db) as conn:
        conn.register("h", history)
        conn.register("r", rh)
        conn.execute(
            "create table forecast_history as select * replace (cast(vintage as date) as vintage, "
            "cast(ds as date) as ds) from h"
        )
        conn.execute("create table risk_history as select * from r")
    reduced = read_series_vintages(db, [B, "b_none"])
    assert len(reduced[B]) == 2 * len(SERVERS) and reduced["b_none"].empty
    risk = read_batches(db, "risk_history", [B], RISK_HISTORY)[B]
    full = risk_call_outcomes(rh, history, processed(), risk_days=RISK_DAYS, hierarchy=HIERARCHY)
    pd.testing.assert_frame_equal(
        risk_call_outcomes(risk, reduced[B], processed(), risk_days=RISK_DAYS, hierarchy=HIERARCHY),
        full,
    )
    pd.testing.assert_frame_equal(vintages_of(reduced[B]), vintages_of(history))
    fn = full[full["server_id"] == "fn"].set_index("vintage")
    assert fn.loc[day("2026-01-01"), "window_end"] == day(
        "2026-01-06"
    )  # its window starts on 01-02
