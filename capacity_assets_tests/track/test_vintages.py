import numpy as np
import pandas as pd
import pytest

from capacity_assets.track.contracts import FORECAST_HISTORY
from capacity_assets.track.vintages import (
    append_vintage,
    as_vintage,
    kept_vintages,
    vintage_of,
    vintages_of,
)

from .helpers import cat, day, golden


def record(batch, start, run_id, servers=("s1", "s2")):
    return cat(
        *[
            golden(batch, s, r, start, 50.123456, 40.0, 60.0, run_id=run_id)
            for s in servers
            for r in ("cpu", "disk")
        ]
    )


def test_as_vintage_is_the_compact_contract():
    rows = as_vintage(record("b1", "2026-01-01", "r1"))
    assert list(rows.columns) == list(FORECAST_HISTORY)
    assert rows.dtypes.astype(str).to_dict() == FORECAST_HISTORY
    assert len(rows) == 2 * 2 * 10
    assert set(rows["vintage"]) == {day("2026-01-01")} and set(rows["run_id"]) == {"r1"}
    assert rows["yhat"].iloc[0] == np.float32(50.12)  # 0.01 pp is kept
    assert rows[["batch", "vintage", "server_id", "resource", "ds"]].equals(
        rows[["batch", "vintage", "server_id", "resource", "ds"]]
        .sort_values(["batch", "vintage", "server_id", "resource", "ds"])
        .reset_index(drop=True)
    )


def test_vintage_is_the_first_day_of_most_series_not_of_a_stale_one():
    fc = cat(
        record("b1", "2026-01-08", "r1"),
        golden("b1", "stale", "cpu", "2026-01-02", 5, 4, 6, run_id="r1"),
    )
    assert vintage_of(fc).to_dict("records") == [
        {"batch": "b1", "vintage": day("2026-01-08"), "run_id": "r1"}
    ]
    assert set(as_vintage(fc)["vintage"]) == {day("2026-01-08")}


def test_rerun_of_the_same_vintage_replaces_it():
    first = append_vintage(pd.DataFrame(), as_vintage(record("b1", "2026-01-01", "r1")))
    second = append_vintage(first, as_vintage(record("b1", "2026-01-08", "r2")))
    rerun = append_vintage(second, as_vintage(record("b1", "2026-01-08", "r3")))
    assert len(rerun) == len(second) == 80
    assert vintages_of(rerun)[["vintage", "run_id"]].values.tolist() == [
        [day("2026-01-01"), "r1"],
        [day("2026-01-08"), "r3"],
    ]
    # idempotent: the asset may write the same result twice
    pd.testing.assert_frame_equal(
        append_vintage(rerun, as_vintage(record("b1", "2026-01-08", "r3"))), rerun
    )


def test_retention_keeps_the_newest_per_batch_and_leaves_other_batches_alone():
    h = pd.DataFrame()
    for i, start in enumerate(["2026-01-01", "2026-01-08", "2026-01-15"]):
        h = append_vintage(h, as_vintage(record("b1", start, f"r{i}")), keep=3)
    h = append_vintage(h, as_vintage(record("b2", "2026-01-01", "x0")), keep=3)
    h = append_vintage(h, as_vintage(record("b1", "2026-01-22", "r3")), keep=3)
    got = vintages_of(h)
    b1 = got.loc[got["batch"] == "b1", "vintage"].tolist()
    assert b1 == [day(d) for d in ("2026-01-08", "2026-01-15", "2026-01-22")]
    assert got.loc[got["batch"] == "b2", "vintage"].tolist() == [day("2026-01-01")]
    assert len(h) == 4 * 40
    assert len(kept_vintages(h, keep=1)) == 2


def test_an_old_backfill_beyond_keep_is_dropped_at_once():
    h = pd.DataFrame()
    for start in ["2026-01-08", "2026-01-15"]:
        h = append_vintage(h, as_vintage(record("b1", start, "r")), keep=2)
    h = append_vintage(h, as_vintage(record("b1", "2026-01-01", "old")), keep=2)
    assert "old" not in set(h["run_id"])


def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="CAPACITY_KEEP_VINTAGES"):
        append_vintage(pd.DataFrame(), as_vintage(record("b1", "2026-01-01", "r")), keep=0)


def test_each_series_records_its_own_threshold():
    levels = pd.DataFrame(
        {
            "server_id": ["s1", "s1", "s2", "s2"],
            "resource": ["cpu", "disk", "cpu", "disk"],
            "threshold": [92.3, 95.0, 95.0, 99.0],
        }
    )
    rows = as_vintage(record("b1", "2026-01-01", "r1"), levels)
    got = rows.drop_duplicates(["server_id", "resource"]).set_index(["server_id", "resource"])[
        "threshold"
    ]
    assert got.to_dict() == {
        ("s1", "cpu"): 92.3,
        ("s1", "disk"): 95.0,
        ("s2", "cpu"): 95.0,
        ("s2", "disk"): 99.0,
    }
    with pytest.raises(ValueError, match="no threshold"):
        as_vintage(record("b1", "2026-01-01", "r1"), levels.iloc[:3])


def test_history_read_back_from_duckdb_appends_and_replaces_the_same():
    """What the IO manager hands back (DATE as datetime64[us], text as object) works as input."""
    duckdb = pytest.importorskip("duckdb")
    h = append_vintage(pd.DataFrame(), as_vintage(record("b1", "2026-01-01", "r1")))
    con = duckdb.connect()
    con.register("obj", h)
    con.execute(
        "create table fh as select * replace (cast(vintage as date) as vintage, cast(ds as date) as ds) "
        "from obj"
    )
    loaded = con.execute("select * from fh").fetchdf()
    assert str(con.execute("select typeof(yhat) from fh limit 1").fetchone()[0]) == "FLOAT"
    again = append_vintage(loaded, as_vintage(record("b1", "2026-01-01", "r2")))
    assert len(again) == len(h) and set(again["run_id"]) == {"r2"}
    assert again.dtypes.astype(str).to_dict() == FORECAST_HISTORY


def test_a_new_batch_count_moves_old_vintages_to_the_servers_batches_and_drops_copies(tmp_path):
    """store.history.rekey: an old vintage under an old key moves (not lost with a key that goes);
    a vintage already kept under the new key loses its old copy; a second call changes nothing."""
    import duckdb

    from capacity_assets.inputs.batching import batch_of
    from capacity_assets.store.history import rekey

    servers = ("s1", "s2", "s3", "s4")
    old = {s: f"old_{i % 2}" for i, s in enumerate(servers)}
    rows = [
        as_vintage(record(old[s], "2026-01-01", "r1", servers=(s,))) for s in servers
    ]  # old batching
    rows += [
        as_vintage(
            record(batch_of("s1", 3), "2026-01-08", "r2", servers=("s1",))
        ),  # the new run: s1
        as_vintage(
            record(old["s2"], "2026-01-08", "r0", servers=("s2",))
        ),  # its old copy of the same vintage
        as_vintage(record(batch_of("s2", 3), "2026-01-08", "r2", servers=("s2",))),
    ]
    history = pd.concat(rows, ignore_index=True)
    db = str(tmp_path / "cap.duckdb")
    con = duckdb.connect(db)
    con.register("obj", history)
    con.execute("create table forecast_history as select * from obj")
    con.close()
    moved, removed = rekey(db, 3)
    got = (
        duckdb.connect(db, read_only=True)
        .execute("select distinct batch, vintage, server_id, run_id from forecast_history")
        .df()
    )
    first = history["vintage"] == pd.Timestamp("2026-01-01")
    copy = (history["server_id"] == "s2") & (history["run_id"] == "r0")
    assert (
        removed == copy.sum() > 0 and moved == first.sum()
    )  # s2's old copy; the 01-01 vintage of all four
    assert (got["batch"] == got["server_id"].map(lambda s: batch_of(s, 3))).all()
    assert len(got) == 6 and set(
        got.loc[got["vintage"] == pd.Timestamp("2026-01-08"), "run_id"]
    ) == {"r2"}
    assert rekey(db, 3) == (0, 0)
