"""processed_data materialised for real: Dagster, the DuckDB IO manager and a temporary DuckDB file."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from capacity_assets.config import CapacitySettings
from capacity_assets.inputs.batching import batch_keys, batch_of
from capacity_assets_tests.conftest import TINY_NEW_SERVER

REPO = Path(__file__).resolve().parents[2]


def settings_for(fleet, db) -> CapacitySettings:
    return CapacitySettings(
        metrics=fleet["metrics"], hierarchy=fleet["hierarchy"], db=str(db), batches=3
    )


def materialize_processed(fleet: dict, db: str, key: str) -> bool:
    from capacity_assets.notify.smtp import SmtpSettings
    from capacity_assets.pipeline.assets.ingest import processed_data_asset
    from capacity_assets.pipeline.partitions import layout
    from capacity_assets.pipeline.resources import build_resources

    settings = settings_for(fleet, db)
    result = dg.materialize(
        [processed_data_asset(layout(settings))],
        partition_key=key,
        resources=build_resources(settings, SmtpSettings(), {}),
    )
    return result.success


def test_each_batch_lands_in_duckdb_with_the_contract_columns(tiny_fleet, tmp_path):
    db = str(tmp_path / "cap.duckdb")
    for key in batch_keys(3):
        assert materialize_processed(tiny_fleet, db, key)
    conn = duckdb.connect(db, read_only=True)
    cols = dict(
        conn.execute(
            "select column_name, data_type from duckdb_columns() where table_name = 'processed_data' "
            "and schema_name = 'main'"
        ).fetchall()
    )
    assert {
        "batch": "VARCHAR",
        "server_id": "VARCHAR",
        "resource": "VARCHAR",
        "ds": "DATE",
        "y": "DOUBLE",
    }.items() <= cols.items()
    df = conn.execute("select * from processed_data").fetchdf()
    raw = (
        duckdb.connect()
        .execute("select count(distinct server_id) from read_parquet(?)", [tiny_fleet["metrics"]])
        .fetchone()[0]
    )
    assert df["server_id"].nunique() == raw
    # every server sits in the batch its id hashes to, and a series has one row per day
    assert all(
        batch_of(s, 3) == b
        for s, b in df[["server_id", "batch"]].drop_duplicates().itertuples(index=False)
    )
    assert not df.duplicated(["server_id", "resource", "ds"]).any()
    assert df["y"].between(0, 100).all()
    # `select * from forecasts`-style unqualified names work in a plain client
    assert conn.execute("select count(*) from processed_data").fetchone()[0] == len(df) > 0
    # the tiny fleet's brand-new server is too short to forecast: its 4 series, and only they, are skipped
    skipped = conn.execute(
        "select batch, server_id, resource, days, reason from skipped_series order by resource"
    ).fetchall()
    assert [(b, s, r) for b, s, r, _, _ in skipped] == [
        (batch_of(TINY_NEW_SERVER, 3), TINY_NEW_SERVER, r)
        for r in ("cpu", "disk", "memory", "network")
    ]
    assert all(
        days < 304 and "shorter than the 304 days needed" in reason for *_, days, reason in skipped
    )


def test_rematerialising_a_batch_replaces_exactly_its_rows(tiny_fleet, tmp_path):
    """Damage batch_01 (rows lost, a stray row added) and mark batch_00; re-materialising batch_01
    must restore exactly its rows and leave batch_00, marker included, alone."""
    db = str(tmp_path / "cap.duckdb")
    for key in batch_keys(3):
        assert materialize_processed(tiny_fleet, db, key)
    query = "select * from processed_data where batch = ? order by all"
    conn = duckdb.connect(db)
    try:
        original = {b: conn.execute(query, [b]).fetchdf() for b in batch_keys(3)}
        assert all(len(original[b]) > 0 for b in batch_keys(3)), {
            b: len(f) for b, f in original.items()
        }
        conn.execute(
            "delete from processed_data where batch = 'batch_01' and ds < (select median(ds) "
            "from processed_data where batch = 'batch_01')"
        )
        stray = (
            "insert into processed_data by name select ? as batch, ? as server_id, 'cpu' as resource, "
            "date '2000-01-01' as ds, 1.0 as y, false as filled"
        )
        conn.execute(stray, ["batch_01", "stray"])
        conn.execute(stray, ["batch_00", "marker"])
        assert len(conn.execute(query, ["batch_01"]).fetchdf()) < len(original["batch_01"])
    finally:
        conn.close()
    assert materialize_processed(tiny_fleet, db, "batch_01")
    conn = duckdb.connect(db, read_only=True)
    try:
        after = {b: conn.execute(query, [b]).fetchdf() for b in batch_keys(3)}
    finally:
        conn.close()
    pd.testing.assert_frame_equal(
        after["batch_01"], original["batch_01"]
    )  # rewritten, stray row gone
    pd.testing.assert_frame_equal(after["batch_02"], original["batch_02"])
    assert "marker" in set(after["batch_00"]["server_id"])  # another batch is not touched
    pd.testing.assert_frame_equal(
        after["batch_00"][after["batch_00"]["server_id"] != "marker"].reset_index(drop=True),
        original["batch_00"],
    )


def test_two_batches_written_at_the_same_moment_into_one_file(tiny_fleet, tmp_path):
    db = str(tmp_path / "cap.duckdb")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        results = list(pool.map(materialize_processed, [tiny_fleet] * 3, [db] * 3, batch_keys(3)))
    assert results == [True, True, True]
    counts = dict(
        duckdb.connect(db, read_only=True)
        .execute("select batch, count(distinct server_id) from processed_data group by 1")
        .fetchall()
    )
    assert sum(counts.values()) == 6 and set(counts) <= set(batch_keys(3))


def test_a_server_that_stopped_reporting_is_skipped_with_the_reason_and_a_brief_gap_is_not(
    tiny_fleet, tmp_path
):
    """Forecast from a last day weeks ago, a silent server's breach dates would be past and it would
    never leave the risk list: without a measured day in the data's last 30 days it is not forecast."""
    from capacity_assets.inputs.cleaning import STALE_DAYS

    metrics = (
        duckdb.connect().execute("select * from read_parquet(?)", [tiny_fleet["metrics"]]).df()
    )
    metrics["timestamp"] = pd.to_datetime(metrics["timestamp"])
    servers = sorted(set(metrics["server_id"]) - {TINY_NEW_SERVER})
    silent, paused = servers[0], servers[1]
    newest = metrics["timestamp"].max()
    cut = {
        silent: newest - pd.Timedelta(days=STALE_DAYS + 10),
        paused: newest - pd.Timedelta(days=STALE_DAYS - 10),
    }
    keep = ~metrics["server_id"].map(cut).notna() | (
        metrics["timestamp"] <= metrics["server_id"].map(cut)
    )
    (tmp_path / "in").mkdir()
    metrics[keep].to_parquet(tmp_path / "in" / "metrics.parquet")
    fleet = {**tiny_fleet, "metrics": str(tmp_path / "in" / "metrics.parquet")}
    db = str(tmp_path / "cap.duckdb")
    for key in batch_keys(3):
        assert materialize_processed(fleet, db, key)
    skipped = (
        duckdb.connect(db, read_only=True)
        .execute(
            "select server_id, resource, reason from skipped_series where server_id <> ? order by all",
            [TINY_NEW_SERVER],
        )
        .fetchall()
    )
    assert [(s, r) for s, r, _ in skipped] == [
        (silent, r) for r in ("cpu", "disk", "memory", "network")
    ]
    assert all(
        reason.startswith("no measured day since")
        and "stopped reporting or left the fleet" in reason
        for *_, reason in skipped
    )
