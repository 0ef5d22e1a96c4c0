"""Pools end to end: a real `capacity run` on a tiny fleet whose hierarchy has a `pool` column and
sizes writes pool_outlook and pool_demand from the published golden record, summed as a planner
would sum it by hand, and again under a what-if scenario (CAPACITY_SCENARIOS)."""

import numpy as np
import pandas as pd
import pytest

from capacity_assets_tests.pools_run import CORES, MEMORY, POOLS, day


def sql(db, statement, params=None) -> pd.DataFrame:
    from capacity_assets.store.queries import query

    return query(db, statement, params or [])


@pytest.fixture
def ran(pooled_run) -> dict:
    return pooled_run


def by_hand(forecasts: pd.DataFrame) -> pd.DataFrame:
    """pool, resource, ds -> capacity and demand in units, summed here from the golden record."""
    f = forecasts.assign(pool=forecasts["server_id"].map(POOLS))
    size = {"cpu": CORES, "memory": MEMORY}
    f = f[f["pool"].fillna("").ne("") & f["resource"].isin(list(size))].copy()
    f["size"] = [size[r].get(s, np.nan) for s, r in zip(f["server_id"], f["resource"])]
    f = f[f["size"].notna()]
    f["capacity_units"] = f["size"]
    f["demand_units"] = f["demand"].clip(lower=0) * f["size"] / 100
    f["demand_upper_units"] = f["demand_upper"].clip(lower=0) * f["size"] / 100
    cols = ["capacity_units", "demand_units", "demand_upper_units"]
    return f.groupby(["pool", "resource", "ds"])[cols].sum().reset_index()


def test_pool_demand_is_the_published_golden_record_summed_by_hand(ran):
    db = ran["db"]
    forecasts = sql(db, "select server_id, resource, ds, demand, demand_upper from forecasts")
    expected = by_hand(forecasts)
    got = sql(db, "select * from pool_demand where scenario = ''")
    got = got[got["resource"].isin(["cpu", "memory"])]
    merged = expected.merge(got, on=["pool", "resource", "ds"], suffixes=("", "_got"))
    assert len(merged) == len(expected) == len(got) > 0
    for c in ("capacity_units", "demand_units", "demand_upper_units"):
        assert merged[f"{c}_got"].to_numpy() == pytest.approx(merged[c].to_numpy()), c
    # the pool's own threshold: CAPACITY_THRESHOLD (95) for cpu, CAPACITY_THRESHOLD_MEMORY for memory
    web_cpu = got[(got["pool"] == "web") & (got["resource"] == "cpu")]
    assert (web_cpu["capacity_units"] == 24.0).all()
    assert web_cpu["threshold_units"].to_numpy() == pytest.approx(24.0 * 0.95)
    web_mem = got[(got["pool"] == "web") & (got["resource"] == "memory")]
    assert web_mem["threshold_units"].to_numpy() == pytest.approx(192.0 * 0.60)


def test_pool_outlook_counts_servers_and_states_its_headroom(ran):
    db = ran["db"]
    outlook = sql(db, "select * from pool_outlook where scenario = ''")
    assert set(outlook["pool"]) == {"web", "app"}
    app = outlook[(outlook["pool"] == "app") & (outlook["resource"] == "cpu")].iloc[0]
    # app-prd-00003 and app-prd-00004 forecast; file-dev-00001 too short to forecast
    assert (app["servers"], app["servers_without_size"]) == (2, 1)
    assert app["capacity_units"] == 8.0 and app["unit"] == "cores"
    daily = sql(db, "select * from pool_demand where scenario = ''")
    for (pool, r), row in outlook.set_index(["pool", "resource"]).iterrows():
        if r not in ("cpu", "memory"):
            continue
        d = daily[(daily["pool"] == pool) & (daily["resource"] == r)]
        margin = d["threshold_units"] - d["demand_upper_units"]
        assert row["headroom_units"] == pytest.approx(margin.min())
        reached = d[d["demand_upper_units"] >= d["threshold_units"]]
        if len(reached):
            assert row["first_breach_date"] == reached["ds"].min()
            assert row["days_to_breach"] == (row["first_breach_date"] - d["ds"].min()).days
            assert row["servers_that_fit"] == 0
        else:
            assert pd.isna(row["first_breach_date"])
            fits = int(row["headroom_units"] // row["median_server_units"])
            assert row["servers_that_fit"] == fits
    # app's memory (64 GB sized) peaks above 60 %: the pool breaches on its own
    assert outlook["first_breach_date"].notna().any()


def test_pools_under_a_scenario_take_its_resize_and_keep_a_migrations_load(ran):
    db = ran["db"]
    base = sql(db, "select * from pool_demand where scenario = ''")
    grow = sql(db, "select * from pool_demand where scenario = 'grow-web'")
    assert len(grow) == len(base)

    def series(frame, pool, resource, column):
        rows = frame[(frame["pool"] == pool) & (frame["resource"] == resource)]
        return rows.sort_values("ds").set_index("ds")[column]

    # web-prd-00000's 8 cores become 16 on day(20): the pool's capacity grows by 8 from that day
    cap = series(grow, "web", "cpu", "capacity_units")
    assert (cap[cap.index < day(20)] == 24.0).all() and (cap[cap.index >= day(20)] == 32.0).all()
    # its cpu load in cores is the same: a resize moves capacity, not demand
    assert series(grow, "web", "cpu", "demand_units").to_numpy() == pytest.approx(
        series(base, "web", "cpu", "demand_units").to_numpy()
    )
    # half of app-prd-00003's memory moves to web from day(10): app loses what web gains, in GB
    lost = series(base, "app", "memory", "demand_units") - series(
        grow, "app", "memory", "demand_units"
    )
    gained = series(grow, "web", "memory", "demand_units") - series(
        base, "web", "memory", "demand_units"
    )
    assert lost[lost.index < day(10)].abs().max() < 1e-9
    assert lost[lost.index >= day(10)].min() > 0
    assert gained.to_numpy() == pytest.approx(lost.to_numpy())
    # the memory web takes in pushes the pool over its threshold, from the migration's day on
    outlook = sql(db, "select * from pool_outlook where pool = 'web' and resource = 'memory'")
    when = outlook.set_index("scenario")["first_breach_date"]
    assert pd.isna(when[""]) and when["grow-web"] >= day(10)


def test_the_same_pools_come_from_a_postgresql_store(ran, postgres_server):
    """The asset's reads and writes on PostgreSQL: the run's tables copied there, the pools read,
    computed and replaced as the asset does, give the DuckDB store's tables."""
    from capacity_assets.config import CapacitySettings
    from capacity_assets.risk.pools import every_pool, thresholds
    from capacity_assets.store.pools import read_pooled, write_pools
    from capacity_assets.whatif.scenarios import load
    from capacity_assets_tests.dashboard.test_dashboard_postgres import copy_to_postgres

    url = postgres_server.create_database()
    copy_to_postgres(ran["db"], url)
    scenarios = {s.name: s for s in load(ran["work"] / "scenarios.yaml")}
    levels = thresholds(CapacitySettings(threshold_memory=60.0))
    outlook, daily, notes = every_pool(read_pooled(url), levels, scenarios)
    assert notes == []
    write_pools(url, outlook.iloc[0:0], daily.iloc[0:0])  # replaced, not appended to
    write_pools(url, outlook, daily)
    for table, key in (("pool_outlook", []), ("pool_demand", ["ds"])):
        order = ["scenario", "pool", "resource", *key]
        want = sql(ran["db"], f"select * from {table}").sort_values(order).reset_index(drop=True)
        got = sql(url, f"select * from {table}").sort_values(order).reset_index(drop=True)
        assert list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False)
