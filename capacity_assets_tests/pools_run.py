"""``pooled_run``: one real `capacity run` on a tiny fleet whose hierarchy has a `pool` column and
server sizes, with what-if scenarios (CAPACITY_SCENARIOS), made once per session for the pools'
tests and the dashboard's Pools and What if views (capacity_assets_tests/conftest.py imports it)."""

from __future__ import annotations

import pandas as pd
import pytest

END = pd.Timestamp("2026-06-30")  # last history day: the forecast starts on 2026-07-01
FIRST = END + pd.Timedelta(days=1)
POOLS = {
    "web-prd-00000": "web",
    "web-stg-00002": "web",
    "app-prd-00003": "app",
    "app-prd-00004": "app",  # no sizes: counted, not summed
    "file-dev-00001": "app",  # too short to forecast: in no sum
    "app-prd-00005": "",  # no pool
}
CORES = {"web-prd-00000": 8, "web-stg-00002": 16, "app-prd-00003": 8, "app-prd-00005": 4}
MEMORY = {"web-prd-00000": 64, "web-stg-00002": 128, "app-prd-00003": 64, "app-prd-00005": 32}
HOT = ("web-prd-00000", "cpu")  # hot-web's added load makes it an exception


def day(offset: int) -> pd.Timestamp:
    return FIRST + pd.Timedelta(days=offset)


SCENARIOS = f"""\
grow-web:
  - resize: {{servers: [web-prd-00000], resources: [cpu], from: {day(20):%Y-%m-%d}, factor: 2}}
  - migrate: {{from_server: app-prd-00003, to_server: web-stg-00002, resources: [memory],
              from: {day(10):%Y-%m-%d}, share: 0.5}}
hot-web:
  - add_load: {{servers: [{HOT[0]}], resources: [{HOT[1]}], from: {day(5):%Y-%m-%d}, points: 90}}
"""


@pytest.fixture(scope="session")
def pooled_run(tmp_path_factory) -> dict:
    """{db, work, env}: the run's DuckDB store, its folder (scenarios.yaml) and its settings."""
    from capacity_assets.demo.fleet import write_fleet
    from capacity_assets_tests.conftest import capacity

    work = tmp_path_factory.mktemp("pooled")
    fleet = write_fleet(work / "fleet", servers=6, months=12, seed=0, end=END)
    hier = pd.read_csv(fleet["hierarchy"], dtype=str)
    assert set(hier["server_id"]) == set(POOLS)
    hier["Pool"] = hier["server_id"].map(POOLS)
    hier["cpu_cores"] = hier["server_id"].map(CORES)
    hier["memory_gb"] = hier["server_id"].map(MEMORY)
    hier.to_csv(fleet["hierarchy"], index=False)
    scenarios = work / "scenarios.yaml"
    scenarios.write_text(SCENARIOS, encoding="utf-8")
    env = {
        "CAPACITY_METRICS": fleet["metrics"],
        "CAPACITY_HIERARCHY": fleet["hierarchy"],
        "CAPACITY_DB": str(work / "cap.duckdb"),
        "CAPACITY_BATCHES": "2",
        "CAPACITY_ENGINES": "challenger",  # pools do not care which model forecast
        "CAPACITY_THRESHOLD_MEMORY": "60",  # low enough for a pool to breach
        "CAPACITY_SCENARIOS": str(scenarios),
        "DAGSTER_HOME": str(work / ".dagster"),
    }
    capacity("run", cwd=work, env=env)
    return {"db": env["CAPACITY_DB"], "work": work, "env": env}
