"""Exception lifecycle by hand: status, first_flagged and resolved reasons across vintages."""

import pandas as pd

from capacity_assets import schema
from capacity_assets.track.contracts import RISK_EXCEPTIONS_LIFECYCLE, RISK_RESOLVED
from capacity_assets.track.lifecycle import resolved, with_status
from capacity_assets.track.risk_calls import append_risk_vintage, as_risk_vintage
from capacity_assets.track.vintages import append_vintage, as_vintage, vintages_of

from .helpers import cat, day, golden, no_risk, risk_row

B = "b1"
V1, V2, V3 = "2026-01-01", "2026-01-08", "2026-01-15"


def record(start, run_id, servers):
    return cat(*[golden(B, s, "cpu", start, 80, 70, 90, run_id=run_id) for s in servers])


def flags(*servers):
    return cat(*[risk_row(B, s) for s in servers]) if servers else no_risk()


def past(vintage_flags, servers=("a", "b", "c")):
    """forecast_history and risk_history after one run per (vintage, flagged servers)."""
    history, rh = pd.DataFrame(), pd.DataFrame()
    for i, (v, flagged) in enumerate(vintage_flags):
        fc = record(v, f"r{i}", servers)
        history = append_vintage(history, as_vintage(fc))
        rh = append_risk_vintage(rh, as_risk_vintage(flags(*flagged), fc), history)
    return history, rh


def test_new_ongoing_and_first_flagged_across_three_vintages_with_a_break():
    history, rh = past([(V1, ["a", "b"]), (V2, ["b"])])
    now = flags("a", "b", "c")
    got = with_status(now, rh, V3, vintages_of(history)).set_index("server_id")
    # a: flagged 01-01, not 01-08, again 01-15 -> new since 01-15; b: flagged all three; c: first time
    assert got["status"].to_dict() == {"a": "new", "b": "ongoing", "c": "new"}
    assert got["first_flagged"].to_dict() == {"a": day(V3), "b": day(V1), "c": day(V3)}
    cols = list(with_status(now, rh, V3, vintages_of(history)).columns)
    assert cols == list(schema.RISK_EXCEPTIONS) + list(RISK_EXCEPTIONS_LIFECYCLE)


def test_a_vintage_that_flagged_nothing_is_a_break_and_reruns_agree():
    history, rh = past([(V1, ["a"]), (V2, [])])
    got = with_status(flags("a"), rh, V3, vintages_of(history))
    assert got["status"].tolist() == ["new"] and got["first_flagged"].tolist() == [day(V3)]
    # the register comes from forecast_history: risk_history alone has no row for 01-08
    assert set(rh["vintage"]) == {day(V1)}
    # once this vintage is stored too, a re-run gives the same answer
    history3, rh3 = past([(V1, ["a"]), (V2, []), (V3, ["a"])])
    again = with_status(flags("a"), rh3, V3, history3)
    pd.testing.assert_frame_equal(again, got)


def test_ongoing_across_a_retention_edge_stops_at_the_oldest_kept_vintage():
    history, rh = past([(V1, ["a"]), (V2, ["a"])])
    history = append_vintage(history, pd.DataFrame(), keep=1)  # 01-01 is gone
    rh = append_risk_vintage(rh, pd.DataFrame(), history)
    got = with_status(flags("a"), rh, V3, history)
    assert got["status"].tolist() == ["ongoing"] and got["first_flagged"].tolist() == [day(V2)]


def test_a_hierarchy_column_called_status_is_kept_aside():
    now = flags("a").assign(status="in production")
    got = with_status(now, pd.DataFrame(), V1, pd.DataFrame({"batch": [B], "vintage": [day(V1)]}))
    assert got["status"].tolist() == ["new"] and got["hierarchy_status"].tolist() == [
        "in production"
    ]


def test_resolved_reasons():
    servers = ["fell", "left", "thr", "thrfell", "late", "still", "unknown"]
    history, rh = past([(V1, servers)], servers=servers)
    upper = {"fell": 90, "thr": 96, "thrfell": 90, "still": 98, "unknown": 98}
    peaks = [golden(B, s, "cpu", V2, 80, 70, u, run_id="r9") for s, u in upper.items()]
    # late's upper bound reaches 99 only on day 10, outside the 5-day window
    peaks.append(golden(B, "late", "cpu", V2, 80, 70, [90] * 9 + [99], run_id="r9"))
    forecasts_now = cat(*peaks)  # 'left' has no forecast any more
    history = append_vintage(history, as_vintage(forecasts_now))
    levels = pd.DataFrame(
        {
            "server_id": list(upper) + ["late"],
            "resource": "cpu",
            "threshold": [
                97.0 if s in ("thr", "thrfell") else 95.0 for s in list(upper) + ["late"]
            ],
        }
    )
    risk_now = flags("still")  # 'unknown' reaches 98 but is not in risk_now: cause not known
    got = resolved(rh, risk_now, forecasts_now, V2, vintages_of(history), levels, risk_days=5)
    assert list(got.columns) == list(RISK_RESOLVED)
    r = got.set_index("server_id")
    assert r["reason"].fillna("unknown").to_dict() == {
        "fell": "forecast fell",
        "late": "forecast fell",
        "left": "left the fleet",
        "thr": "threshold changed",
        "thrfell": "forecast fell",
        "unknown": "unknown",
    }
    assert set(r["last_flagged"]) == {day(V1)} and set(r["resolved_in"]) == {day(V2)}
    assert set(r["threshold_before"]) == {95.0}
    assert r.loc["thr", "threshold_now"] == 97.0 and pd.isna(r.loc["left", "threshold_now"])
    assert r.loc["fell", "department"] == "Pay" and r.loc["fell", "app_manager"] == "ann"
    # a number works too: with 95 everywhere, thr's 96 is still at risk, so its cause is unknown
    assert pd.isna(
        resolved(rh, risk_now, forecasts_now, V2, history, 95.0, risk_days=5)
        .set_index("server_id")
        .loc["thr", "reason"]
    )


def test_nothing_resolved_on_the_first_vintage_or_after_a_silent_one():
    history, rh = past([(V1, [])])
    assert resolved(rh, no_risk(), record(V1, "r0", ["a"]), V1, history, 95.0).empty
    history, rh = past([(V1, ["a"]), (V2, [])])
    # 'a' resolved in 01-08 already; in 01-15 the previous vintage (01-08) flagged nothing
    assert resolved(rh, no_risk(), record(V3, "r9", ["a"]), V3, history, 95.0).empty
    assert resolved(rh, no_risk(), record(V2, "r1", ["a"]), V2, history, 95.0)[
        "reason"
    ].tolist() == ["forecast fell"]


def test_no_risk_now_gives_an_empty_frame_with_the_new_columns():
    history, rh = past([(V1, ["a"])])
    got = with_status(no_risk(), rh, V2, history)
    assert got.empty and list(got.columns) == list(schema.RISK_EXCEPTIONS) + list(
        RISK_EXCEPTIONS_LIFECYCLE
    )


def test_every_server_of_a_batch_leaving_resolves_its_flags_as_left_the_fleet():
    """The batch has no row now (no forecast, no risk, no vintage of its own): judged at the run's
    vintage, its flagged series left the fleet instead of vanishing without a resolved row."""
    history, rh = past([(V1, ["a", "c"])])
    nothing = record(V2, "r9", ["a"]).iloc[0:0]
    got = resolved(rh, no_risk(), nothing, V2, vintages_of(history), 95.0, batches=[B])
    assert got["server_id"].tolist() == ["a", "c"] and set(got["reason"]) == {"left the fleet"}
    assert set(got["batch"]) == {B} and set(got["resolved_in"]) == {day(V2)}
    # without saying which batch is judged, an empty batch is invisible (the old behaviour)
    assert resolved(rh, no_risk(), nothing, V2, vintages_of(history), 95.0).empty
