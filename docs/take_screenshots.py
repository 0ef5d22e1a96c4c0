"""Screenshots of the dashboard's three views, for the README.

    python docs/take_screenshots.py --db data/capacity.duckdb [--out docs/screenshots]

Starts `capacity dashboard` on a free port against ``--db`` and saves one full-page PNG per view,
rendered by Debian's Chromium (/usr/bin/chromium) through Playwright.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
VIEWS = {
    "Risk heatmap": "risk_heatmap.png",
    "Capacity plan": "capacity_plan.png",
    "Track record": "track_record.png",
    "Tournament summary": "tournament_summary.png",
    "Deep dive": "deep_dive.png",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="data/capacity.duckdb")
    ap.add_argument("--out", default=str(Path(__file__).with_name("screenshots")))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("capacity")), "dashboard", "--port", str(port)],
        env={**os.environ, "CAPACITY_DB": os.path.abspath(args.db)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(
                viewport={"width": 1400, "height": 2100}
            )  # Streamlit scrolls inside the page
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            for view, name in VIEWS.items():
                page.get_by_role("tab", name=view).click()
                page.wait_for_timeout(2500)  # let the view's queries and charts finish drawing
                page.wait_for_function(
                    "document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000
                )
                page.screenshot(path=str(out / name))
                print(f"wrote {out / name}")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
