"""The dashboard's Pools and What if views: through AppTest on a real run with pools and scenarios
(``pooled_run``) and on one without (``tiny_run``), and drawn by Chromium as a user gets them."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pandas as pd
import pytest

from capacity_assets.store import queries
from capacity_assets_tests.conftest import BIN
from capacity_assets_tests.dashboard.test_dashboard import app, figures, open_view, texts, values
from capacity_assets_tests.pools_run import HOT, day


def test_without_pools_or_scenarios_the_views_say_how_to_get_them(tiny_pipeline_db, monkeypatch):
    at = open_view(app(tiny_pipeline_db, monkeypatch).run(), "Pools")
    assert not at.exception, at.exception
    assert "No pools to show" in texts(at) and "`pool` column" in texts(at)
    at = open_view(at, "What if")
    assert not at.exception, at.exception
    assert "No scenarios to compare" in texts(at) and "CAPACITY_SCENARIOS" in texts(at)


def test_the_pools_view_shows_each_pool_against_its_capacity(pooled_run, monkeypatch):
    db = pooled_run["db"]
    outlook = queries.query(db, "select * from pool_outlook where scenario = ''")
    sized = outlook[outlook["capacity_units"] > 0]
    at = open_view(app(db, monkeypatch).run(), "Pools")
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pool resources that breach"] == str(sized["first_breach_date"].notna().sum())
    table = next(d.value for d in at.dataframe if "headroom_units" in d.value.columns)
    assert len(table) == len(sized)
    # the pools without any sized server for a resource are named, not shown as 0 units
    assert "have no server with a size" in texts(at)
    at.selectbox(key="pools_pool").set_value("web").run()
    at.selectbox(key="pools_resource").set_value("cpu").run()
    days = queries.query(
        db,
        "select * from pool_demand where scenario = '' and pool = 'web' and resource = 'cpu' "
        "order by ds",
    )
    traces = {t.get("name"): t for t in figures(at)[0]["data"]}
    assert values(traces["demand"]["y"]) == pytest.approx(days["demand_units"].tolist())
    assert values(traces["capacity"]["y"]) == pytest.approx(days["capacity_units"].tolist())
    # under grow-web, web-prd-00000's cpu doubles from day(20): the capacity line steps 24 -> 32
    at.selectbox(key="pools_scenario").set_value("grow-web").run()
    assert not at.exception, at.exception
    traces = {t.get("name"): t for t in figures(at)[0]["data"]}
    capacity = pd.Series(
        values(traces["capacity"]["y"]), index=pd.to_datetime(values(traces["capacity"]["x"]))
    )
    assert set(capacity[capacity.index < day(20)]) == {24.0}
    assert set(capacity[capacity.index >= day(20)]) == {32.0}
    assert "upper demand, published" in traces


def test_the_whatif_view_lists_what_a_scenario_changes(pooled_run, monkeypatch):
    db = pooled_run["db"]
    at = open_view(app(db, monkeypatch).run(), "What if")
    assert not at.exception, at.exception
    at.selectbox(key="whatif_scenario").set_value("hot-web").run()
    assert not at.exception, at.exception
    risk = queries.query(db, "select * from scenario_risk where scenario = 'hot-web'")
    new = risk[risk["baseline_first_breach_date"].isna()]
    assert HOT in set(zip(new["server_id"], new["resource"]))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["New exceptions"] == str(len(new))
    shown = next(d.value for d in at.dataframe if "days_to_breach" in d.value.columns)
    assert set(zip(shown["server_id"], shown["resource"])) == set(
        zip(new["server_id"], new["resource"])
    )
    # the added cpu load is bought in cores for web-prd-00000's department
    department = queries.query(
        db,
        "select department from capacity_plan where server_id = ? and resource = 'cpu'",
        [HOT[0]],
    ).iloc[0, 0]
    plan = next(d.value for d in at.dataframe if "series_scenario" in d.value.columns)
    row = plan[(plan["department"] == department) & (plan["resource"] == "cpu")]
    row = row[row["action"] == "add"].iloc[0]
    assert row["unit"] == "cores" and float(row["change"]) > 0


@contextmanager
def served(db: str, cwd):
    """`capacity dashboard` on ``db`` (its own process group, stopped at the end); yields its URL."""
    from capacity_assets_tests.dashboard.test_dashboard_browser import free_port

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "capacity"), "dashboard", "--port", str(port)],
        cwd=cwd,
        env={**os.environ, "CAPACITY_DB": db},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dashboard did not start:\n{proc.stdout.read()}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # capacity dashboard and its streamlit child, nothing else
        proc.wait(timeout=20)


def test_pools_and_whatif_render_in_chromium(pooled_run, tmp_path):
    """The Pools chart draws its lines and the What if view its tables, in a real browser (skipped
    without Debian's chromium, as the other browser test, unless CI is set)."""
    from playwright.sync_api import sync_playwright

    from capacity_assets_tests.dashboard.test_dashboard_browser import ARGS, CHARTS, CHROMIUM

    with served(pooled_run["db"], tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            page.get_by_role("tab", name="Pools").click()
            chart = page.locator(CHARTS).filter(has_text=" in ").first  # "<pool>: CPU in cores"
            chart.wait_for(timeout=60_000)
            chart.locator(".scatterlayer .trace").first.wait_for(timeout=60_000)
            # demand band edge, demand, upper demand, capacity, threshold
            assert chart.locator(".scatterlayer .trace").count() == 5
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "pools.png"))
            page.get_by_role("tab", name="What if").click()
            page.get_by_text("Capacity to add or reclaim by department").wait_for(timeout=60_000)
            assert page.locator('[role="tabpanel"] [data-testid="stDataFrame"]').count() >= 1
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "whatif.png"))
            assert not errors, errors
        finally:
            browser.close()
    assert (tmp_path / "pools.png").stat().st_size > 10_000


def test_the_views_show_the_same_from_a_postgresql_store(pooled_run, postgres_server, monkeypatch):
    """The views' queries on PostgreSQL give what they give on DuckDB (the tables copied across)."""
    from capacity_assets_tests.dashboard.test_dashboard_postgres import copy_to_postgres

    url = postgres_server.create_database()
    copy_to_postgres(pooled_run["db"], url)
    shown = {}
    for store in (pooled_run["db"], url):
        at = open_view(app(store, monkeypatch).run(), "Pools")
        at.selectbox(key="pools_pool").set_value("web").run()
        at.selectbox(key="pools_resource").set_value("memory").run()
        pools = next(d.value for d in at.dataframe if "headroom_units" in d.value.columns)
        chart = {t.get("name"): values(t["y"]) for t in figures(at)[0]["data"]}
        at = open_view(at, "What if")
        at.selectbox(key="whatif_scenario").set_value("hot-web").run()
        assert not at.exception, at.exception
        shown[store] = (
            {m.label: m.value for m in at.metric},
            pools.sort_values(["pool", "resource"]).reset_index(drop=True),
            chart,
            [d.value.reset_index(drop=True) for d in at.dataframe],
        )
    duck, pg = shown[pooled_run["db"]], shown[url]
    assert pg[0] == duck[0]
    pd.testing.assert_frame_equal(pg[1], duck[1], check_dtype=False)
    assert pg[2].keys() == duck[2].keys()
    for name in duck[2]:
        assert pg[2][name] == pytest.approx(duck[2][name]), name
    assert len(pg[3]) == len(duck[3]) >= 2
    for a, b in zip(pg[3], duck[3]):
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
