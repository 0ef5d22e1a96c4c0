"""The track record (issue 15) end to end: `capacity demo --weeks 3` replays three weekly runs on one
fleet, then the last week is re-run (`capacity run --force`) and run once more keeping only two
vintages (CAPACITY_KEEP_VINTAGES=2).

One module fixture performs the whole sequence and snapshots the track tables after each step, so
every test reads a fixed state whatever order the tests run in. forecast_accuracy is recomputed by
hand (plain loops, not the package's vectorised scoring) from forecast_history and processed_data.
"""

import numpy as np
import pandas as pd
import pytest

from capacity_assets_tests.conftest import capacity

BATCHES = 2
KEYS = [f"batch_{i:02d}" for i in range(BATCHES)]
WEEKS = 3
THRESHOLD = 50.0  # low: the fleet has risk rows every week, so exceptions can be ongoing
MAPE_FLOOR = 5.0
BUCKETS = {"1-7": (1, 7), "8-30": (8, 30), "31-90": (31, 90), "91-180": (91, 180)}
SERIES = ["batch", "vintage", "server_id", "resource"]
TRACK = {
    "history": "select batch, vintage, run_id, server_id, resource, ds, yhat, yhat_lower, yhat_upper, model, threshold "
    "from forecast_history",
    "accuracy": "select * from forecast_accuracy",
    "risk_history": "select * from risk_history",
    "risk": "select * from risk_exceptions",
    "processed": "select batch, server_id, resource, ds, y, filled from processed_data",
    "ledger": "select batch, run_id from batch_ledger",
    "forecast_runs": "select distinct batch, run_id from forecasts",
    "risk_calls": "select * from risk_calls order by batch, vintage, server_id, resource",
    "resolved": "select * from risk_resolved",
}


def snapshot(db: str) -> dict[str, pd.DataFrame]:
    from capacity_assets.store.queries import query_many

    out = query_many(db, {k: (v, []) for k, v in TRACK.items()})
    for frame in out.values():
        for c in ("vintage", "ds", "first_flagged", "first_breach_date"):
            if c in frame.columns:
                frame[c] = pd.to_datetime(frame[c])
    return out


def vintages(history: pd.DataFrame) -> pd.DataFrame:
    """batch, vintage, run_id, rows: one row per kept vintage."""
    return (
        history.groupby(["batch", "vintage", "run_id"])
        .size()
        .rename("rows")
        .reset_index()
        .sort_values(["batch", "vintage"], ignore_index=True)
    )


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("replay_e2e")
    env = {
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": str(BATCHES),
        "CAPACITY_THRESHOLD": str(THRESHOLD),
        "DAGSTER_HOME": str(work / ".dagster"),
        "CAPACITY_KEEP_VINTAGES": "",
        "CAPACITY_METRICS": "",
        "CAPACITY_HIERARCHY": "",
    }
    demo = work / "demo"
    shown = capacity(
        "demo",
        "--servers",
        "6",
        "--months",
        "12",
        "--weeks",
        str(WEEKS),
        "--out",
        str(demo),
        cwd=work,
        env=env,
        timeout=900,
    ).stdout
    weeks = sorted(p.name for p in (demo / "weeks").iterdir())
    states = {"demo": snapshot(env["CAPACITY_DB"])}
    last = {
        **env,
        "CAPACITY_METRICS": str(demo / "weeks" / weeks[-1] / "metrics.parquet"),
        "CAPACITY_HIERARCHY": str(demo / "hierarchy.csv"),
    }
    unchanged = capacity("run", cwd=work, env=last).stdout
    states["unchanged"] = snapshot(env["CAPACITY_DB"])
    capacity("run", "--force", cwd=work, env=last)
    states["rerun"] = snapshot(env["CAPACITY_DB"])
    capacity("run", "--force", cwd=work, env={**last, "CAPACITY_KEEP_VINTAGES": "2"})
    states["kept2"] = snapshot(env["CAPACITY_DB"])
    # every server of the batch with the most exceptions leaves the fleet
    from capacity_assets.inputs.batching import batch_of

    victim = states["kept2"]["risk"]["batch"].value_counts().idxmax()
    metrics = pd.read_parquet(last["CAPACITY_METRICS"])
    metrics[metrics["server_id"].map(lambda s: batch_of(s, BATCHES)) != victim].to_parquet(
        work / "emptied.parquet"
    )
    capacity(
        "run",
        "--force",
        cwd=work,
        env={
            **last,
            "CAPACITY_KEEP_VINTAGES": "2",
            "CAPACITY_METRICS": str(work / "emptied.parquet"),
        },
    )
    states["emptied"] = snapshot(env["CAPACITY_DB"])
    return {
        "work": work,
        "demo": demo,
        "weeks": weeks,
        "states": states,
        "demo_stdout": shown,
        "unchanged_stdout": unchanged,
        "victim": victim,
    }


def test_the_demo_replays_three_mondays_one_week_apart(replay):
    mondays = [pd.Timestamp(w) for w in replay["weeks"]]
    assert len(mondays) == WEEKS and all(m.dayofweek == 0 for m in mondays)
    assert all(b - a == pd.Timedelta(days=7) for a, b in zip(mondays, mondays[1:]))
    yesterday = pd.Timestamp.now(tz="UTC").normalize().tz_localize(None) - pd.Timedelta(days=1)
    assert yesterday - pd.Timedelta(days=6) <= mondays[-1] <= yesterday + pd.Timedelta(days=1)
    for i, monday in enumerate(mondays, 1):
        week = pd.read_parquet(
            replay["demo"] / "weeks" / monday.strftime("%Y-%m-%d") / "metrics.parquet"
        )
        assert pd.Timestamp(week["timestamp"].max()).normalize() == monday - pd.Timedelta(days=1)
        assert (
            f"week {i}/{WEEKS}: history up to {monday - pd.Timedelta(days=1):%Y-%m-%d}"
            in replay["demo_stdout"]
        )


def test_forecast_history_holds_one_vintage_per_week_and_batch(replay):
    s = replay["states"]["demo"]
    v = vintages(s["history"])
    mondays = [pd.Timestamp(w) for w in replay["weeks"]]
    for batch in KEYS:
        mine = v[v["batch"] == batch]
        # each vintage is its run's first forecast day: the Monday after the history's last Sunday
        assert list(mine["vintage"]) == mondays, mine
        assert mine["run_id"].nunique() == WEEKS
        assert (
            mine["rows"].nunique() == 1 and mine["rows"].iloc[0] > 0
        )  # same series x 180 days each week
        first_days = (
            s["history"][s["history"]["batch"] == batch].groupby(SERIES)["ds"].min().reset_index()
        )
        assert (first_days["ds"] == first_days["vintage"]).mean() > 0.5
    # the newest vintage is exactly what is published now
    newest = v[v["vintage"] == mondays[-1]].set_index("batch")["run_id"]
    assert newest.to_dict() == s["ledger"].set_index("batch")["run_id"].to_dict()
    assert s["forecast_runs"].set_index("batch")["run_id"].to_dict() == newest.to_dict()


def hand_accuracy(history: pd.DataFrame, processed: pd.DataFrame) -> pd.DataFrame:
    """forecast_accuracy recomputed row by row from its definitions."""
    actual = processed[~processed["filled"].astype(bool) & processed["y"].notna()]
    actual = {(r.batch, r.server_id, r.resource, r.ds): float(r.y) for r in actual.itertuples()}
    rows = []
    for key, fc in history.groupby(SERIES):
        batch, vintage, server, resource = key
        start = fc["ds"].min()
        scored = []
        for r in fc.itertuples():
            y = actual.get((batch, server, resource, r.ds))
            if y is None:
                continue
            day = (r.ds - start).days + 1
            yhat, lo, hi = (round(float(x), 2) for x in (r.yhat, r.yhat_lower, r.yhat_upper))
            scored.append((day, y, yhat, lo, hi))
        for bucket in [*BUCKETS, "all"]:
            lo_day, hi_day = BUCKETS.get(bucket, (1, 10**6))
            days = [d for d in scored if lo_day <= d[0] <= hi_day]
            if not days:
                continue
            n = len(days)
            sum_y = sum(abs(y) for _, y, *_ in days)
            rows.append(
                {
                    "batch": batch,
                    "vintage": vintage,
                    "server_id": server,
                    "resource": resource,
                    "model": fc["model"].iloc[0],
                    "horizon_bucket": bucket,
                    "days_scored": n,
                    "mape": sum(abs(y - f) / max(abs(y), MAPE_FLOOR) for _, y, f, _, _ in days)
                    / n
                    * 100,
                    "wape": sum(abs(y - f) for _, y, f, _, _ in days) / sum_y * 100
                    if sum_y > 0
                    else np.nan,
                    "bias": sum(f - y for _, y, f, _, _ in days) / n,
                    "band_coverage": sum(lo <= y <= hi for _, y, _, lo, hi in days) / n,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("state", ["demo", "rerun"])
def test_forecast_accuracy_equals_a_hand_computation(replay, state):
    s = replay["states"][state]
    want = hand_accuracy(s["history"], s["processed"])
    got = s["accuracy"]
    key = [*SERIES, "horizon_bucket"]
    assert len(got) > 0 and not got.duplicated(key).any()
    assert set(map(tuple, got[key].itertuples(index=False))) == set(
        map(tuple, want[key].itertuples(index=False))
    )
    merged = want.merge(got, on=key, suffixes=("_want", "_got"))
    assert (merged["model_want"] == merged["model_got"]).all()
    assert (merged["days_scored_want"] == merged["days_scored_got"]).all()
    for c in ("mape", "wape", "bias", "band_coverage"):
        np.testing.assert_allclose(
            merged[f"{c}_got"], merged[f"{c}_want"], rtol=1e-9, atol=1e-9, err_msg=c
        )
    # the oldest vintage has two weeks of actuals behind it: its second week lands in bucket 8-30
    oldest = got[got["vintage"] == got["vintage"].min()]
    assert {"1-7", "8-30", "all"} <= set(oldest["horizon_bucket"])
    # the newest vintage has no actuals yet, so it has no rows
    assert got["vintage"].max() < s["history"]["vintage"].max()


def test_one_hand_picked_row_of_the_oldest_vintage(replay):
    """The same check spelled out for one series, vintage and bucket, as a reader would do it."""
    s = replay["states"]["demo"]
    acc = s["accuracy"]
    row = (
        acc[(acc["horizon_bucket"] == "8-30") & (acc["vintage"] == acc["vintage"].min())]
        .sort_values(SERIES)
        .iloc[0]
    )
    h = s["history"]
    fc = h[
        (h["batch"] == row["batch"])
        & (h["vintage"] == row["vintage"])
        & (h["server_id"] == row["server_id"])
        & (h["resource"] == row["resource"])
    ]
    p = s["processed"]
    act = p[
        (p["batch"] == row["batch"])
        & (p["server_id"] == row["server_id"])
        & (p["resource"] == row["resource"])
        & ~p["filled"].astype(bool)
    ]
    both = fc.merge(act, on="ds")
    both = both[((both["ds"] - fc["ds"].min()).dt.days + 1).between(8, 30)]
    y, yhat = both["y"].to_numpy(float), np.round(both["yhat"].to_numpy(float), 2)
    lo, hi = (
        np.round(both["yhat_lower"].to_numpy(float), 2),
        np.round(both["yhat_upper"].to_numpy(float), 2),
    )
    assert row["days_scored"] == len(both) > 0
    assert row["mape"] == pytest.approx(np.mean(np.abs(y - yhat) / np.maximum(np.abs(y), 5)) * 100)
    assert row["wape"] == pytest.approx(np.abs(y - yhat).sum() / np.abs(y).sum() * 100)
    assert row["bias"] == pytest.approx(np.mean(yhat - y))
    assert row["band_coverage"] == pytest.approx(np.mean((y >= lo) & (y <= hi)))


def test_re_running_unchanged_data_without_force_is_skipped(replay):
    assert f"{BATCHES} batch(es) unchanged" in replay["unchanged_stdout"], replay[
        "unchanged_stdout"
    ]
    before, after = (
        vintages(replay["states"]["demo"]["history"]),
        vintages(replay["states"]["unchanged"]["history"]),
    )
    pd.testing.assert_frame_equal(before, after)


def test_re_running_the_last_week_replaces_its_vintage(replay):
    before, after = (
        vintages(replay["states"]["demo"]["history"]),
        vintages(replay["states"]["rerun"]["history"]),
    )
    newest = before["vintage"].max()
    assert len(after) == len(before) == WEEKS * BATCHES
    assert list(after["vintage"]) == list(before["vintage"]) and list(after["rows"]) == list(
        before["rows"]
    )
    old, new = before[before["vintage"] == newest], after[after["vintage"] == newest]
    assert set(old["run_id"]).isdisjoint(
        new["run_id"]
    )  # replaced by the re-run, not added next to it
    pd.testing.assert_frame_equal(
        before[before["vintage"] < newest], after[after["vintage"] < newest]
    )
    ledger = replay["states"]["rerun"]["ledger"].set_index("batch")["run_id"]
    assert new.set_index("batch")["run_id"].to_dict() == ledger.to_dict()
    # risk_history: one vintage per week still, the newest from the re-run
    rh = replay["states"]["rerun"]["risk_history"]
    assert rh.groupby("batch")["vintage"].nunique().max() <= WEEKS
    assert set(rh.loc[rh["vintage"] == newest, "run_id"]) <= set(new["run_id"])


def test_risk_calls_score_the_vintages_before_the_run_and_a_re_run_leaves_them_as_they_were(replay):
    """A run's own vintage has nothing to score yet and is published only after risk_calls is
    computed: counting it when an earlier run of the same data had published it made a re-run differ."""
    first, again = replay["states"]["demo"]["risk_calls"], replay["states"]["rerun"]["risk_calls"]
    mondays = [pd.Timestamp(w) for w in replay["weeks"]]
    assert len(first) > 0 and sorted(set(first["vintage"])) == mondays[:-1]
    assert first["flagged"].any()
    pd.testing.assert_frame_equal(again, first)


def test_a_batch_whose_servers_all_left_resolves_its_exceptions_as_left_the_fleet(replay):
    """The emptied batch has no forecast of its own now: its exceptions must not vanish unreported."""
    victim, before, after = replay["victim"], replay["states"]["kept2"], replay["states"]["emptied"]
    flagged = before["risk"][before["risk"]["batch"] == victim]
    assert len(flagged) > 0 and not (after["risk"]["batch"] == victim).any()
    res = after["resolved"][after["resolved"]["batch"] == victim]
    assert sorted(zip(res["server_id"], res["resource"])) == sorted(
        zip(flagged["server_id"], flagged["resource"])
    )
    assert set(res["reason"]) == {"left the fleet"}
    assert set(pd.to_datetime(res["resolved_in"])) == {pd.Timestamp(replay["weeks"][-1])}


def test_keeping_two_vintages_drops_the_oldest(replay):
    before, after = (
        vintages(replay["states"]["rerun"]["history"]),
        vintages(replay["states"]["kept2"]["history"]),
    )
    mondays = [pd.Timestamp(w) for w in replay["weeks"]]
    for batch in KEYS:
        assert list(after.loc[after["batch"] == batch, "vintage"]) == mondays[-2:]
    kept = after[after["vintage"] < mondays[-1]]
    pd.testing.assert_frame_equal(
        kept.reset_index(drop=True), before[before["vintage"] == mondays[-2]].reset_index(drop=True)
    )
    rh = replay["states"]["kept2"]["risk_history"]
    for batch in KEYS:
        assert set(rh.loc[rh["batch"] == batch, "vintage"]) <= set(mondays[-2:])
        assert set(rh.loc[rh["batch"] == batch, "vintage"]) >= {mondays[-1]}


def test_after_retention_nothing_refers_to_a_dropped_vintage(replay):
    """Once CAPACITY_KEEP_VINTAGES=2 has dropped the oldest vintage, the run that dropped it must not
    publish accuracy rows for it, nor date an exception's first flag back to it ("first_flagged
    cannot go back further than the oldest kept vintage"). Today the scoring and lifecycle steps read
    forecast_history/risk_history as published before this run, and retention happens only when
    this run publishes: the dropped vintage is still scored and still counts as flagged."""
    s = replay["states"]["kept2"]
    kept = set(s["history"]["vintage"])
    assert len(kept) == 2
    assert set(s["accuracy"]["vintage"]) <= kept, sorted(set(s["accuracy"]["vintage"]) - kept)
    risk = s["risk"]
    assert len(risk) > 0
    assert (risk["first_flagged"] >= min(kept)).all(), risk[
        ["server_id", "resource", "first_flagged"]
    ]
    for r in risk.itertuples():
        register = sorted(set(s["history"].loc[s["history"]["batch"] == r.batch, "vintage"]))
        want = expected_first_flagged(
            s["risk_history"], register, r.batch, r.server_id, r.resource, max(kept)
        )
        assert r.first_flagged == want and r.status == ("ongoing" if want < max(kept) else "new"), r


def expected_first_flagged(
    risk_history: pd.DataFrame, register: list, batch, server, resource, vintage
):
    """The oldest vintage of the unbroken run of flagged vintages that ends with ``vintage``."""
    flagged = set(
        risk_history.loc[
            (risk_history["batch"] == batch)
            & (risk_history["server_id"] == server)
            & (risk_history["resource"] == resource),
            "vintage",
        ]
    )
    order = [v for v in register if v <= vintage]
    first = vintage
    for v in reversed(order[:-1]):
        if v not in flagged:
            break
        first = v
    return first


@pytest.mark.parametrize("state", ["demo", "rerun"])
def test_exceptions_are_new_or_ongoing_since_their_first_flag(replay, state):
    s = replay["states"][state]
    risk, rh = s["risk"], s["risk_history"]
    assert len(risk) > 0
    assert set(risk["status"]) <= {"new", "ongoing"}
    newest = s["history"]["vintage"].max()
    assert (risk["first_flagged"] <= newest).all()
    assert (risk["status"] == "ongoing").any(), (
        "a 50 % threshold flags the same series week after week"
    )
    for r in risk.itertuples():
        register = sorted(set(s["history"].loc[s["history"]["batch"] == r.batch, "vintage"]))
        first = expected_first_flagged(rh, register, r.batch, r.server_id, r.resource, newest)
        assert r.first_flagged == first, (r.server_id, r.resource, r.first_flagged, first)
        assert r.status == ("ongoing" if first < newest else "new"), r
    assert (
        risk["first_flagged"] == pd.Timestamp(replay["weeks"][0])
    ).any()  # flagged every week since the first
    # this week's risk_history is this week's risk list
    now = rh[rh["vintage"] == newest]
    assert set(zip(now["server_id"], now["resource"])) == set(
        zip(risk["server_id"], risk["resource"])
    )
