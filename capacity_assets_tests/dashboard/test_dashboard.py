"""The executive dashboard through Streamlit's AppTest, on a real (tiny) pipeline database.

A doctored copy of that database adds what a 6-server fleet rarely has: at-risk series, and a server
id full of quotes, unicode and SQL, which must round-trip through every query as a bound parameter.
The Track record view is tested on ``track_db`` (conftest.py): three weekly runs of the real pipeline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from capacity_assets.store import queries
from capacity_assets.store.db import db_lock
from capacity_assets.track.risk_calls import risk_call_scores
from capacity_assets_tests.conftest import TINY_NEW_SERVER, TINY_SATURATING

APP = str(Path(__file__).resolve().parents[2] / "capacity_assets" / "dashboard" / "app.py")
NASTY_ID = "o'brien\"; drop table forecasts; -- ünïcødé ✓"
BREACH = pd.Timestamp("2027-01-07")


def app(db: str, monkeypatch, **env) -> AppTest:
    monkeypatch.setenv("CAPACITY_DB", str(db))
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    at = AppTest.from_file(APP, default_timeout=90)
    return at


def open_view(at: AppTest, view: str) -> AppTest:
    at.session_state["view"] = view
    return at.run()


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in (
            "markdown",
            "info",
            "warning",
            "error",
            "success",
            "caption",
            "subheader",
            "title",
        )
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def copy_db(src: str, dst: Path) -> str:
    with db_lock(src, exclusive=False):
        shutil.copy(src, dst)
    return str(dst)


@pytest.fixture(scope="module")
def risky_db(tiny_pipeline_db, tmp_path_factory) -> dict:
    """The tiny pipeline's database with one server renamed to NASTY_ID and made critical (cpu), and
    another server given a warning (memory)."""
    import duckdb

    db = copy_db(tiny_pipeline_db, tmp_path_factory.mktemp("risky") / "cap.duckdb")
    con = duckdb.connect(db)
    try:
        servers = [
            r[0]
            for r in con.execute(
                "select distinct server_id from forecasts order by server_id"
            ).fetchall()
        ]
        victim, other = servers[0], servers[1]
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from duckdb_tables() where schema_name = 'main'"
            ).fetchall()
        }
        for t in tables:
            cols = {
                r[0]
                for r in con.execute(
                    "select column_name from duckdb_columns() where table_name = ?", [t]
                ).fetchall()
            }
            if "server_id" in cols:
                con.execute(
                    f'update main."{t}" set server_id = ? where server_id = ?', [NASTY_ID, victim]
                )
        con.execute("delete from risk_exceptions")
        start = con.execute(
            "select min(ds) from forecasts where server_id = ?", [NASTY_ID]
        ).fetchone()[0]
        for sid, res, sev, when in (
            (NASTY_ID, "cpu", "critical", BREACH),
            (other, "memory", "warning", pd.Timestamp(start) + pd.Timedelta(days=60)),
        ):
            con.execute(
                "insert into risk_exceptions by name "
                "select f.batch, f.server_id, f.resource, coalesce(h.department, 'Unassigned') department, "
                "coalesce(h.app_manager, 'Unassigned') app_manager, ?::date first_breach_date, "
                "(?::date - min(f.ds) + 1)::bigint days_to_breach, 99.0 peak_upper, 96.0 peak_yhat, "
                "any_value(f.model) model, any_value(f.champion_mape) champion_mape, any_value(f.trust) trust, "
                "? severity from forecasts f left join business_hierarchy h using (server_id) "
                "where f.server_id = ? and f.resource = ? group by all",
                [when.date(), when.date(), sev, sid, res],
            )
    finally:
        con.close()
    return {"db": db, "nasty": NASTY_ID, "other": other}


def heatmap_cells(fig: dict) -> dict[tuple[str, str], int]:
    if not fig["data"] or fig["data"][0].get("type") != "heatmap":
        return {}  # the "no series at risk" figure
    trace = fig["data"][0]
    labels = {"CPU": "cpu", "Memory": "memory", "Disk": "disk", "Network": "network"}
    return {
        (dep, labels[res]): int(v)
        for dep, row in zip(trace["y"], trace["z"])
        for res, v in zip(trace["x"], row)
        if v
    }


def risk_counts(db: str, severity: str | None = None) -> dict[tuple[str, str], int]:
    df = queries.query(
        db,
        "select department, resource, count(*) n from risk_exceptions "
        "where cast(? as varchar) is null or severity = ? group by all",
        [severity, severity],
    )
    return {(r.department, r.resource): int(r.n) for r in df.itertuples()}


# --- the real pipeline database ---------------------------------------------------------------------
def test_every_view_renders_on_pipeline_db(tiny_pipeline_db, monkeypatch):
    at = app(tiny_pipeline_db, monkeypatch).run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == [
        "Risk heatmap",
        "Capacity plan",
        "What if",
        "Pools",
        "Track record",
        "Tournament summary",
        "Deep dive",
    ]
    metrics = {m.label: m.value for m in at.metric}
    n = queries.query(tiny_pipeline_db, "select count(*) n from champions").iloc[0]
    fleet = queries.query(
        tiny_pipeline_db, "select count(distinct server_id) s from processed_data"
    ).iloc[0]
    # every server, also one only skipped (the tiny fleet's new server), and every published batch
    assert metrics["Servers"] == f"{fleet['s']:,}" and metrics["Series"] == f"{n['n']:,}"
    batches = queries.query(tiny_pipeline_db, "select count(*) n from batch_ledger").iloc[0, 0]
    assert metrics["Batches"] == f"{batches:,}"
    assert "Data is fresh" in texts(at)
    # the tiny fleet has a saturating server, so the heatmap has a cell to get right (not {} == {})
    counts = risk_counts(tiny_pipeline_db)
    dept = queries.query(
        tiny_pipeline_db,
        "select department from risk_exceptions where server_id = ? and resource = ?",
        list(TINY_SATURATING),
    )["department"].tolist()
    assert len(dept) == 1, f"{TINY_SATURATING} is not in risk_exceptions"
    assert counts.get((dept[0], TINY_SATURATING[1]), 0) >= 1
    assert heatmap_cells(figures(at)[0]) == counts

    at = open_view(at, "Tournament summary")
    assert not at.exception, at.exception
    assert len(figures(at)) == 3
    assert "bad-MAPE check" in texts(at)

    at = open_view(at, "Deep dive")
    assert not at.exception, at.exception
    server = at.selectbox(key="deep_select").value
    assert server and f"### {server}" in texts(at)
    resources = queries.query(
        tiny_pipeline_db,
        "select count(distinct resource) n from processed_data where server_id = ?",
        [server],
    ).iloc[0, 0]
    assert len(figures(at)) == resources


def test_heatmap_counts_equal_risk_exceptions(risky_db, monkeypatch):
    db = risky_db["db"]
    at = app(db, monkeypatch).run()
    assert not at.exception
    assert heatmap_cells(figures(at)[0]) == risk_counts(db) and sum(risk_counts(db).values()) == 2
    for severity in ("critical", "warning"):
        at.radio(key="risk_severity").set_value(severity).run()
        assert not at.exception
        assert heatmap_cells(figures(at)[0]) == risk_counts(db, severity)


def test_risk_list_filters_and_download(risky_db, monkeypatch):
    db = risky_db["db"]
    at = app(db, monkeypatch).run()
    dept = queries.query(
        db, "select department from risk_exceptions where server_id = ?", [NASTY_ID]
    ).iloc[0, 0]
    at.selectbox(key="risk_department").set_value(dept).run()
    shown = at.dataframe[0].value
    assert set(shown["department"]) == {dept} and NASTY_ID in set(shown["server_id"])
    assert at.get("download_button"), "the filtered list can be downloaded"


def test_deep_dive_defaults_to_most_urgent_and_shows_breach(risky_db, monkeypatch):
    at = open_view(app(risky_db["db"], monkeypatch).run(), "Deep dive")
    assert not at.exception, at.exception
    assert at.selectbox(key="deep_select").value == NASTY_ID  # critical beats warning
    assert f"{BREACH:%Y-%m-%d}" in "\n".join(e.value for e in at.error)
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert any(f"{BREACH:%d %b %Y}" in t for t in titles)
    cpu = next(f for f in figures(at) if f["layout"]["title"]["text"].startswith("CPU"))
    assert any(t.get("name", "").startswith("first breach") for t in cpu["data"])
    assert {"actual", "prophet backtest", "challenger backtest", "forecast band"} <= {
        t.get("name") for t in cpu["data"]
    }


def test_deep_dive_search_with_quotes_and_a_normal_server(risky_db, monkeypatch):
    at = open_view(app(risky_db["db"], monkeypatch).run(), "Deep dive")
    at.text_input(key="deep_search").set_value("o'brien\"; drop").run()
    assert not at.exception
    assert at.selectbox(key="deep_select").options == [NASTY_ID]
    at.text_input(key="deep_search").set_value("").run()
    normal = next(
        o for o in at.selectbox(key="deep_select").options if o not in (NASTY_ID, risky_db["other"])
    )
    at.selectbox(key="deep_select").set_value(normal).run()
    assert not at.exception
    assert "No resource is forecast to reach" in texts(at)
    assert figures(at)
    assert (
        queries.query(risky_db["db"], "select count(*) from forecasts").iloc[0, 0] > 0
    )  # still there


def test_deep_dive_states_the_series_own_threshold(risky_db, tmp_path, monkeypatch):
    """A per-server threshold (40 %) is what the series was judged against: the banner must say so,
    not the viewer's CAPACITY_THRESHOLD."""
    import duckdb

    db = copy_db(risky_db["db"], tmp_path / "cap.duckdb")
    con = duckdb.connect(db)
    con.execute(
        "update risk_exceptions set threshold = 40 where server_id = ? and resource = 'cpu'",
        [NASTY_ID],
    )
    con.close()
    at = open_view(app(db, monkeypatch).run(), "Deep dive")
    assert not at.exception
    banner = "\n".join(e.value for e in at.error)
    assert "**CPU** reaches 40 % on" in banner and "reaches 95 %" not in banner, banner


def test_deep_dive_search_finds_a_server_that_has_no_forecast(tiny_pipeline_db, monkeypatch):
    """The tiny fleet's new server is only in skipped_series (too short): found by search, and the deep
    dive says why it has no forecast."""
    at = open_view(app(tiny_pipeline_db, monkeypatch).run(), "Deep dive")
    at.text_input(key="deep_search").set_value(TINY_NEW_SERVER).run()
    assert not at.exception
    assert at.selectbox(key="deep_select").options == [TINY_NEW_SERVER]
    assert "shorter than the" in texts(at)
    # nobody forecasts it: no all-clear, but a warning that nothing is known
    assert not [e.value for e in at.success if "No resource is forecast" in e.value]
    assert "Not forecast: none of this server's series could be forecast" in "\n".join(
        e.value for e in at.warning
    )


def test_deep_dive_draws_every_tournament_contenders_backtest_and_opens_an_older_database(
    tiny_pipeline_db, tmp_path, monkeypatch
):
    """The combination can be a series' champion, yet its backtest was never drawn; and a database
    from before the capacity plan (no demand columns) crashed the deep dive."""
    import duckdb

    db = copy_db(tiny_pipeline_db, tmp_path / "cap.duckdb")
    at = open_view(app(db, monkeypatch).run(), "Deep dive")
    assert not at.exception, at.exception
    names = {t.get("name") for f in figures(at) for t in f["data"]}
    assert "combination backtest" in names, names
    con = duckdb.connect(db)
    con.execute("alter table forecasts drop column demand")
    con.execute("alter table forecasts drop column demand_upper")
    con.close()
    at = open_view(app(db, monkeypatch).run(), "Deep dive")
    assert not at.exception, at.exception
    assert figures(at)


def test_risk_list_opens_deep_dive(risky_db, monkeypatch):
    at = app(risky_db["db"], monkeypatch).run()
    at.selectbox(key="risk_open_select").set_value(risky_db["other"]).run()
    at.button(key="risk_open").click().run()
    assert not at.exception
    assert at.session_state["view"] == "Deep dive"
    assert at.selectbox(key="deep_select").value == risky_db["other"]
    assert "reaches 95 %" in "\n".join(e.value for e in at.warning)


# --- no data, busy data -----------------------------------------------------------------------------
def test_no_database_explains_how_to_get_data(tmp_path, monkeypatch):
    at = app(tmp_path / "missing.duckdb", monkeypatch).run()
    assert not at.exception
    assert "capacity demo" in texts(at)
    assert not (tmp_path / "missing.duckdb").exists(), "a reader must not create the database"


def test_a_bad_lock_timeout_is_a_configuration_error_not_a_traceback(risky_db, monkeypatch):
    at = app(risky_db, monkeypatch, CAPACITY_DASHBOARD_LOCK_TIMEOUT="abc").run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Configuration error: CAPACITY_DASHBOARD_LOCK_TIMEOUT='abc': expected the "
        "seconds a view waits for a writing run, e.g. 8"
    ]


def test_database_without_tables_explains_how_to_get_data(tmp_path, monkeypatch):
    import duckdb

    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    at = app(db, monkeypatch).run()
    assert not at.exception
    assert "capacity demo" in texts(at) and "no champions" in texts(at)


def test_busy_database_shows_last_loaded_data(risky_db, tmp_path, monkeypatch):
    db = copy_db(risky_db["db"], tmp_path / "cap.duckdb")
    at = app(db, monkeypatch, CAPACITY_DASHBOARD_LOCK_TIMEOUT=0.3).run()
    before = heatmap_cells(figures(at)[0])
    assert (
        before == risk_counts(db) and sum(before.values()) == 2
    )  # a real heatmap, not the empty figure
    held, release = threading.Event(), threading.Event()

    def writer():
        with db_lock(db, exclusive=True):
            held.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        held.wait(5)
        os.utime(db)  # a commit changes the file: the cache must not answer
        at.run()
        assert not at.exception, at.exception
        assert "pipeline is refreshing the data; showing the last loaded data" in texts(at)
        assert heatmap_cells(figures(at)[0]) == before
        # a reload (a new session), as the note suggests, keeps showing it: it used to blank the page
        again = app(db, monkeypatch, CAPACITY_DASHBOARD_LOCK_TIMEOUT=0.3).run()
        assert not again.exception, again.exception
        assert heatmap_cells(figures(again)[0]) == before
        at = open_view(at, "Deep dive")  # never loaded yet: a note, not a failure
        assert not at.exception
        assert "pipeline is refreshing" in texts(at)
    finally:
        release.set()
        t.join()
    at.run()
    assert "refreshing" not in texts(at)


def test_dashboard_reads_while_a_batch_is_materialised(tiny_run, tmp_path, monkeypatch):
    """`capacity run --batch batch_00 --force` and the dashboard on the same file: both succeed.

    --force: the copied file's batch ledger says batch_00 is unchanged, and a skipped run would leave
    nothing for the dashboard to read around."""
    db = copy_db(tiny_run["db"], tmp_path / "cap.duckdb")
    env = {
        **os.environ,
        **tiny_run["env"],
        "CAPACITY_DB": db,
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
    }
    run_id_sql = "select any_value(run_id) from forecasts where batch = 'batch_00'"
    run_before = queries.query(db, run_id_sql).iloc[0, 0]
    run = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "capacity"),
            "run",
            "--batch",
            "batch_00",
            "--force",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    renders, deadline = 0, time.monotonic() + 300
    try:
        while run.poll() is None and time.monotonic() < deadline:
            for view in ("Risk heatmap", "Track record", "Tournament summary", "Deep dive"):
                at = app(db, monkeypatch, CAPACITY_DASHBOARD_LOCK_TIMEOUT=2)
                at.session_state["view"] = view
                at.run()
                assert not at.exception, at.exception
                assert "Capacity outlook" in texts(at)
                renders += 1
        out, _ = run.communicate(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out
    assert "batch_00: ok" in out and renders >= 3
    # the batch was really re-written while the dashboard read it
    assert queries.query(db, run_id_sql).iloc[0, 0] not in (None, run_before)
    at = app(db, monkeypatch).run()
    assert not at.exception and "Data is fresh" in texts(at)


# --- track record -----------------------------------------------------------------------------------
BUCKETS = ("1-7", "8-30", "31-90", "91-180")


def values(v) -> list:
    """A plotly array from the figure JSON: a list, or {'dtype', 'bdata'} (base64) as plotly 6+ writes it."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def figure(at: AppTest, title_start: str) -> dict:
    return next(f for f in figures(at) if f["layout"]["title"]["text"].startswith(title_start))


TABLES = {
    "accuracy": ("vintage", "horizon_bucket"),
    "calls": ("vintage", "tp"),
    "departments": ("department", "tp"),
    "exceptions": ("change", "server_id"),
    "resolved": ("server_id", "reason"),
}


def table(at: AppTest, name: str) -> pd.DataFrame:
    """A table of the Track record by its leading columns (AppTest does not expose a dataframe's key)."""
    lead = list(TABLES[name])
    found = [
        d.value
        for d in at.dataframe
        if [c for c in d.value.columns if c in lead] == lead and d.value.columns[0] == lead[0]
    ]
    return found[0] if found else pd.DataFrame(columns=lead)


def test_header_counts_kept_vintages(track_db, monkeypatch):
    at = app(track_db["db"], monkeypatch).run()
    assert not at.exception, at.exception
    n = queries.query(track_db["db"], "select count(distinct vintage) from forecast_history").iloc[
        0, 0
    ]
    assert n == 3  # one vintage per replayed week
    assert f"{n} weekly vintages kept" in texts(at)


def test_track_record_accuracy_equals_sql(track_db, monkeypatch):
    db = track_db["db"]
    at = open_view(app(db, monkeypatch).run(), "Track record")
    assert not at.exception, at.exception
    assert "Kept vintages" not in texts(at)  # no "fills as weekly runs accumulate" note
    present = queries.query(db, "select distinct horizon_bucket from forecast_accuracy")[
        "horizon_bucket"
    ].tolist()
    assert "1-7" in present
    fig = figure(at, "Median MAPE")
    assert [t["name"] for t in fig["data"]] == [f"days {b}" for b in BUCKETS if b in present]

    oldest = "select min(vintage) from forecast_accuracy"
    sql = queries.query(
        db,
        f"select median(mape) med, avg(mape) mean, median(wape) filter (where not isnan(wape)) wape, "
        f"sum(bias * days_scored) / sum(days_scored) bias, "
        f"sum(band_coverage * days_scored) / sum(days_scored) cov, count(*) n "
        f"from forecast_accuracy where vintage = ({oldest}) and horizon_bucket = '1-7'",
    ).iloc[0]
    first_week = next(t for t in fig["data"] if t["name"] == "days 1-7")
    assert values(first_week["y"])[0] == pytest.approx(sql["med"])
    n_vintages = queries.query(
        db, "select count(distinct vintage) from forecast_accuracy where horizon_bucket = '1-7'"
    ).iloc[0, 0]
    assert len(values(first_week["y"])) == n_vintages >= 2

    acc = table(at, "accuracy")
    row = acc[(acc["vintage"] == acc["vintage"].min()) & (acc["horizon_bucket"] == "1-7")].iloc[0]
    assert row["median_mape"] == pytest.approx(sql["med"]) and row["mean_mape"] == pytest.approx(
        sql["mean"]
    )
    assert row["median_wape"] == pytest.approx(sql["wape"]) and row["bias"] == pytest.approx(
        sql["bias"]
    )
    assert row["band_coverage"] == pytest.approx(sql["cov"] * 100) and row["series"] == sql["n"]
    assert (
        len(acc)
        == queries.query(
            db, "select count(distinct (vintage, horizon_bucket)) from forecast_accuracy"
        ).iloc[0, 0]
    )

    at.radio(key="track_stat").set_value("mean_mape").run()
    assert not at.exception
    first_week = next(t for t in figure(at, "Mean MAPE")["data"] if t["name"] == "days 1-7")
    assert values(first_week["y"])[0] == pytest.approx(sql["mean"])


def _scores(shown: pd.DataFrame, expected: pd.DataFrame, key: str) -> None:
    """The table as shown against track.risk_calls.risk_call_scores on the same rows."""
    assert list(shown[key].astype(str)) == list(expected[key].astype(str))
    for col in ("series", "tp", "fp", "fn"):
        assert shown[col].tolist() == expected[col].tolist(), col
    for col in ("precision", "recall"):
        assert shown[col].tolist() == ["–" if pd.isna(v) else f"{v:.0%}" for v in expected[col]], (
            col
        )
    assert shown["status"].tolist() == ["final" if f else "so far" for f in expected["final"]]


def test_track_record_risk_calls_equal_risk_call_scores(track_db, monkeypatch):
    db = track_db["db"]
    outcomes = queries.query(db, "select * from risk_calls")
    by_vintage = risk_call_scores(outcomes, by=("vintage",))
    assert len(by_vintage) >= 2 and by_vintage["series"].gt(0).all()
    at = open_view(app(db, monkeypatch).run(), "Track record")
    assert not at.exception, at.exception
    shown = table(at, "calls")
    _scores(
        shown.assign(vintage=pd.to_datetime(shown["vintage"]).dt.date),
        by_vintage.assign(vintage=pd.to_datetime(by_vintage["vintage"]).dt.date),
        "vintage",
    )
    _scores(table(at, "departments"), risk_call_scores(outcomes, by=("department",)), "department")

    oldest = pd.Timestamp(by_vintage["vintage"].min())
    at.selectbox(key="track_calls_vintage").set_value(f"{oldest:%Y-%m-%d}").run()
    assert not at.exception
    _scores(
        table(at, "departments"),
        risk_call_scores(
            outcomes[pd.to_datetime(outcomes["vintage"]) == oldest], by=("department",)
        ),
        "department",
    )


def test_track_record_what_changed_counts(track_db, monkeypatch):
    db = track_db["db"]
    at = open_view(app(db, monkeypatch).run(), "Track record")
    assert not at.exception, at.exception
    status = queries.query(
        db,
        "select count(*) filter (where status = 'new') new, "
        "count(*) filter (where status = 'ongoing') ongoing from risk_exceptions",
    ).iloc[0]
    resolved = queries.query(db, "select count(*) from risk_resolved").iloc[0, 0]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["New exceptions"], metrics["Ongoing"], metrics["Resolved"]) == (
        str(status["new"]),
        str(status["ongoing"]),
        str(resolved),
    )
    assert len(table(at, "exceptions")) == status["new"] + status["ongoing"]
    assert len(table(at, "resolved")) == resolved


@pytest.fixture(scope="module")
def changed_db(track_db, tmp_path_factory) -> str:
    """track_db with a known week of changes: one new, one ongoing, two resolved (one without a reason)."""
    import duckdb

    db = copy_db(track_db["db"], tmp_path_factory.mktemp("changed") / "cap.duckdb")
    con = duckdb.connect(db)
    try:
        con.execute("delete from risk_exceptions")
        con.execute("delete from risk_resolved")
        servers = [
            r[0]
            for r in con.execute("select distinct server_id from forecasts order by 1").fetchall()
        ]
        for sid, status, sev, days in (
            (servers[0], "ongoing", "critical", 5),
            (NASTY_ID, "new", "warning", 60),
        ):
            con.execute(
                "insert into risk_exceptions by name select 'batch_00' batch, ? server_id, 'cpu' resource, "
                "'Payments' department, 'Ann' app_manager, current_date + ? first_breach_date, "
                "?::bigint days_to_breach, 99.0 peak_upper, 96.0 peak_yhat, 'prophet' model, "
                "5.0 champion_mape, 'high' trust, ? severity, 95.0 threshold, ? status, "
                "current_date - 14 first_flagged",
                [sid, days, days, sev, status],
            )
        for sid, reason in ((servers[1], "forecast fell"), (servers[2], None)):
            con.execute(
                "insert into risk_resolved by name select 'batch_00' batch, ? server_id, 'disk' resource, "
                "'Payments' department, 'Ann' app_manager, current_date - 7 last_flagged, "
                "current_date resolved_in, ? reason, 95.0 threshold_before, 95.0 threshold_now",
                [sid, reason],
            )
    finally:
        con.close()
    return db


def test_what_changed_lists_new_ongoing_and_resolved(changed_db, monkeypatch):
    at = open_view(app(changed_db, monkeypatch).run(), "Track record")
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["New exceptions"], metrics["Ongoing"], metrics["Resolved"]) == ("1", "1", "2")
    now, gone = table(at, "exceptions"), table(at, "resolved")
    assert now["change"].tolist() == ["new", "ongoing"]
    assert now["server_id"].iloc[0] == NASTY_ID  # an id with quotes and SQL, shown as itself
    assert sorted(gone["reason"]) == ["forecast fell", "unknown"]
    assert "Resolved because: forecast fell 1, unknown 1" in texts(at)


def test_track_record_after_one_run_explains_how_it_fills(tiny_pipeline_db, monkeypatch):
    at = open_view(app(tiny_pipeline_db, monkeypatch).run(), "Track record")
    assert not at.exception, at.exception
    assert "1 weekly vintage kept" in texts(at)
    note = "\n".join(e.value for e in at.info)
    assert "Kept vintages: 1" in note and "capacity demo --weeks 8" in note
    assert not [f for f in figures(at) if "MAPE" in f["layout"]["title"]["text"]]


def test_track_record_on_a_database_from_before(tiny_pipeline_db, tmp_path, monkeypatch):
    """No track tables and no lifecycle columns: every view still opens, the Track record says why it is empty."""
    import duckdb

    db = copy_db(tiny_pipeline_db, tmp_path / "old.duckdb")
    with duckdb.connect(db) as con:
        for t in (
            "forecast_history",
            "risk_history",
            "forecast_accuracy",
            "risk_calls",
            "risk_resolved",
        ):
            con.execute(f"drop table if exists {t}")
        con.execute("alter table risk_exceptions drop column status")
        con.execute("alter table risk_exceptions drop column first_flagged")
    at = app(db, monkeypatch).run()
    assert not at.exception, at.exception
    assert "no weekly vintage kept yet" in texts(at)
    at = open_view(at, "Track record")
    assert not at.exception, at.exception
    assert "Kept vintages: 0" in "\n".join(e.value for e in at.info)
    assert "from before the exception lifecycle" in texts(at)


def test_a_digest_link_opens_that_server_in_the_deep_dive(tiny_pipeline_db, monkeypatch):
    servers = queries.query(
        tiny_pipeline_db, "select distinct server_id from champions order by 1"
    )["server_id"]
    target = servers.iloc[-1]
    at = app(tiny_pipeline_db, monkeypatch)
    at.query_params["server"] = target
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["deep_select"] == target and at.session_state["view"] == "Deep dive"


def test_names_are_shown_as_written_and_plan_totals_in_the_plans_own_steps(
    risky_db, tmp_path, monkeypatch
):
    """'R&D <Ops> *Team*' lost its asterisks to Markdown in the risk list's summary line, and plan totals
    rounded Gbps to whole units: -9.8 Gbps on a 10 Gbps link read as giving the whole link back."""
    import duckdb

    db = copy_db(risky_db["db"], tmp_path / "cap.duckdb")
    con = duckdb.connect(db)
    con.execute(
        "update risk_exceptions set department = 'R&D <Ops> *Team*' where server_id = ?", [NASTY_ID]
    )
    con.execute("update capacity_plan set action = 'none' where resource = 'network'")
    con.execute(
        "update capacity_plan set action = 'reclaim', change_units = -9.8, unit = 'Gbps', department = 'Net' "
        "where rowid = (select min(rowid) from capacity_plan where resource = 'network')"
    )
    con.close()
    at = app(db, monkeypatch).run()
    at.selectbox(key="risk_department").set_value("R&D <Ops> *Team*").run()
    assert not at.exception, at.exception
    line = next(e.value for e in at.markdown if "at risk" in e.value)
    assert line.endswith("at risk in R&D \\<Ops\\> \\*Team\\*"), line  # escaped: shown as written
    at = open_view(app(db, monkeypatch).run(), "Capacity plan")
    assert not at.exception, at.exception
    totals = next(d.value for d in at.dataframe if "change" in d.value.columns)
    assert list(totals.loc[totals["resource"] == "network", "change"]) == ["-9.8 Gbps"], totals
