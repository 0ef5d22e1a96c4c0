"""The dashboard as a user gets it: `capacity dashboard` served by Streamlit, rendered by Chromium.

AppTest does not run the frontend, so only a real browser shows that the Plotly charts draw. Needs
Debian's ``chromium`` package (Playwright's own browser download is not used); without it the test
skips locally and fails in CI (env CI set). It runs on ``track_db`` (conftest.py), so the Track record
has charts to draw, once from the DuckDB file and once from a PostgreSQL store holding the same tables.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from capacity_assets.store import queries

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWS = ("Risk heatmap", "Capacity plan", "Track record", "Tournament summary", "Deep dive")
CHARTS = '[role="tabpanel"] .js-plotly-plot'  # the open tab's charts (st.tabs on_change="rerun" renders only it)


if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(
        f"{CHROMIUM} not found (apt-get install chromium); required when CI is set",
        allow_module_level=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, track_db) -> str:
    """The store the dashboard reads: the DuckDB file, or a PostgreSQL copy of its tables."""
    if request.param == "duckdb":
        return track_db["db"]
    from capacity_assets_tests.dashboard.test_dashboard_postgres import copy_to_postgres

    url = request.getfixturevalue("postgres_server").create_database()
    copy_to_postgres(track_db["db"], url)
    return url


@pytest.fixture
def dashboard(store, tmp_path):
    port = free_port()
    env = {**os.environ, "CAPACITY_DB": store}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "capacity"), "dashboard", "--port", str(port)],
        cwd=tmp_path,
        env=env,
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
                raise AssertionError(
                    f"dashboard did not start:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # capacity dashboard and its streamlit child, nothing else
        proc.wait(timeout=20)


def test_dashboard_renders_in_chromium(dashboard, store, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(dashboard, wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            for view in VIEWS:
                assert page.get_by_role("tab", name=view).count() == 1, view
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "risk_heatmap.png"))
            # each view draws its own chart (found by its title), with its data in it, not an empty plot
            buckets = queries.query(
                store,
                "select count(distinct horizon_bucket) from forecast_accuracy "
                "where horizon_bucket != 'all'",
            ).iloc[0, 0]
            assert buckets >= 1
            for view, title, layer, traces in (
                ("Track record", "MAPE by vintage", "scatterlayer", buckets),
                ("Capacity plan", "Series to add and to reclaim", "barlayer", None),
                ("Deep dive", "CPU", "scatterlayer", None),
            ):
                page.get_by_role("tab", name=view).click()
                chart = page.locator(CHARTS).filter(has_text=title).first
                chart.wait_for(timeout=60_000)
                chart.locator(f".{layer} .trace").first.wait_for(timeout=60_000)
                drawn = chart.locator(f".{layer} .trace").count()
                assert drawn >= 1 and (traces is None or drawn == traces), (view, drawn, traces)
                assert page.locator('[data-testid="stException"]').count() == 0, view
                page.screenshot(path=str(tmp_path / f"{view}.png"))
            assert not errors, errors
        finally:
            browser.close()
    assert (tmp_path / "risk_heatmap.png").stat().st_size > 10_000
