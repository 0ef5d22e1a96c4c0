"""Staged publication on a real store, DuckDB and PostgreSQL alike (``store`` in conftest.py): all
of a batch's tables or none, and a run that another run took the batch over from fails instead of
reporting success for work it never published."""

import duckdb
import pandas as pd
import pytest

from capacity_assets.store import staging
from capacity_assets.store.db import fetch_frame


def _stage(conn, table, run_id, batch, values):
    obj = pd.DataFrame({"batch": batch, "v": values})
    conn.register("obj", obj)
    conn.execute(f"create table if not exists main.{table} as select * from obj limit 0")
    taken = staging.stage(conn, table, "select * from obj", run_id, [batch])
    conn.unregister("obj")
    return taken


def _main(conn, table, batch):
    return sorted(
        v
        for (v,) in conn.execute(f"select v from main.{table} where batch = ?", [batch]).fetchall()
    )


def test_a_batch_is_published_whole_and_only_when_asked(conn):
    _stage(conn, "a", "r1", "b0", [1, 2])
    assert _main(conn, "a", "b0") == []  # staged is not published
    _stage(conn, "b", "r1", "b0", [3])
    assert staging.publish(conn, "r1", "b0") == ["a", "b"]
    assert _main(conn, "a", "b0") == [1, 2] and _main(conn, "b", "b0") == [3]


def test_the_later_run_takes_the_batch_over_and_the_earlier_one_fails_loudly(conn):
    _stage(conn, "a", "old", "b0", [1])
    _stage(conn, "b", "old", "b0", [2])
    staging.publish(conn, "old", "b0")  # the previous complete publication
    _stage(conn, "a", "slow", "b0", [10])  # run 'slow' starts ...
    assert _stage(conn, "a", "fast", "b0", [20]) == {
        "b0": "slow"
    }  # ... 'fast' starts later and takes over
    with pytest.raises(staging.Superseded, match="slow was superseded by run fast"):
        _stage(conn, "b", "slow", "b0", [11])
    with pytest.raises(staging.Superseded):
        staging.publish(conn, "slow", "b0")
    assert _main(conn, "a", "b0") == [1] and _main(conn, "b", "b0") == [
        2
    ]  # still the previous results
    _stage(conn, "b", "fast", "b0", [21])
    staging.publish(conn, "fast", "b0")
    assert _main(conn, "a", "b0") == [20] and _main(conn, "b", "b0") == [21]
    # other batches are not affected by a takeover
    _stage(conn, "a", "slow", "b1", [5])
    assert staging.staged_tables(conn, "slow", "b1") == {"a"}


def test_an_append_table_replaces_only_its_vintage_and_keeps_the_newest(conn):

    def publish(run, batch, vintage, values):
        obj = pd.DataFrame({"batch": batch, "vintage": vintage, "v": values})
        conn.register("obj", obj)
        conn.execute("create table if not exists main.h as select * from obj limit 0")
        staging.stage(conn, "h", "select * from obj", run, [batch], append_by="vintage", keep=2)
        conn.unregister("obj")
        staging.publish(conn, run, batch)

    def vintages(batch):
        rows = conn.execute(
            "select vintage, v from main.h where batch = ? order by 1, 2", [batch]
        ).fetchall()
        return [(n, [v for m, v in rows if m == n]) for n in sorted({m for m, _ in rows})]

    publish("r1", "b0", 1, [10])
    publish("r1", "b1", 1, [99])
    publish("r2", "b0", 2, [20])
    assert vintages("b0") == [(1, [10]), (2, [20])]
    publish("r3", "b0", 2, [21, 22])  # the same vintage again: replaced, not added
    assert vintages("b0") == [(1, [10]), (2, [21, 22])]
    publish("r4", "b0", 3, [30])  # keep=2: the oldest goes, other batches untouched
    assert vintages("b0") == [(2, [21, 22]), (3, [30])] and vintages("b1") == [(1, [99])]


def test_arrow_fetch_types_every_column_as_fetchdf_does(conn):
    """A ranged run loads its inputs through Arrow (shared strings, a fraction of the memory); every
    step downstream must see the frame a plain DuckDB fetch gives, from either store: dates,
    nullable integers and booleans, text, floats, empty results."""
    query = (
        "select * from (values (date '2026-01-01', timestamp '2026-01-01 10:00', 'app-01', "
        "null::integer, true, null::boolean, 7::bigint, 1.5::real, 2.5::double precision), "
        "(null, null, null, 3, false, true, 8, null, null)) t(d, ts, s, n, b, nb, i, f, x) "
        "where s = ? or s is null"
    )
    empty = "select 1::integer as x, 'a' as s, date '2026-01-01' as d where false"
    plain = duckdb.connect()
    pd.testing.assert_frame_equal(
        fetch_frame(conn, query, ["app-01"]), plain.execute(query, ["app-01"]).fetchdf()
    )
    pd.testing.assert_frame_equal(fetch_frame(conn, empty), plain.execute(empty).fetchdf())
    plain.close()
