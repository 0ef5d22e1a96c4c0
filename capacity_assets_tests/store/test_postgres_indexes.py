"""PostgreSQL reads only the batch it publishes: every published and staging table has an index on
its batch key, also in a database written before the store made them, so a publish's cost follows
the batch, not the fleet already stored (benchmarks/README.md, *Beyond one machine*)."""

import pandas as pd
import pytest

from capacity_assets.store import db, staging


@pytest.fixture
def pg(postgres_server):
    url = postgres_server.create_database()
    db.prepare(url)
    conn = db.connect(url)
    yield url, conn
    conn.close()


def _plan(url: str, sql: str) -> str:
    """PostgreSQL's plan for ``sql`` (through psycopg: ADBC fetches every result by COPY)."""
    import psycopg

    with psycopg.connect(url) as c:
        return "\n".join(r[0] for r in c.execute(f"explain {sql}").fetchall())


def test_a_publish_deletes_its_batch_through_an_index(pg):
    url, conn = pg
    rows = pd.DataFrame({"batch": [f"batch_{i % 40:02d}" for i in range(40_000)], "v": 1.0})
    conn.register("obj", rows)
    conn.execute("create table main.forecasts as select * from obj limit 0")
    staging.stage(conn, "forecasts", "select * from obj", "r1", sorted(set(rows["batch"])))
    conn.unregister("obj")
    for b in sorted(set(rows["batch"])):
        staging.publish(conn, "r1", b)
    conn.execute("analyze main.forecasts")
    conn.execute("analyze staging.forecasts")
    assert db.fetch_frame(conn, "select count(*) as n from main.forecasts")["n"][0] == 40_000
    # the staging table the store made has its index; a published table made without one (as
    # by an older version) gets it at the next run's prepare
    assert "Seq Scan" not in _plan(url, "delete from staging.forecasts where batch = 'batch_03'")
    assert "Seq Scan" in _plan(url, "delete from main.forecasts where batch = 'batch_03'")
    db._PREPARED.clear()  # the next run's process
    db.prepare(url)
    conn.execute("analyze main.forecasts")
    assert "Seq Scan" not in _plan(url, "delete from main.forecasts where batch = 'batch_03'")


def test_a_database_written_before_the_indexes_gets_them_when_a_run_prepares_it(pg):
    url, conn = pg
    conn.execute("create table main.risk_exceptions (batch varchar, server_id varchar)")
    conn.execute(
        "insert into main.risk_exceptions select 'batch_' || (i % 50), 's' || i "
        "from generate_series(1, 50000) i"
    )
    conn.execute("analyze main.risk_exceptions")
    assert ("main", "risk_exceptions") in conn.unindexed("batch")
    db._PREPARED.clear()  # a new process
    db.prepare(url)
    assert conn.unindexed("batch") == []
    assert "Seq Scan" not in _plan(url, "delete from main.risk_exceptions where batch = 'batch_7'")
