"""Both stores for the store tests: the embedded DuckDB file and a PostgreSQL database, so the
staging protocol and the readers are held to one behaviour whichever ``CAPACITY_DB`` selects."""

import pytest

from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path) -> str:
    """A new, empty store: a .duckdb path, or a fresh database's URL. The server is asked for only
    by the PostgreSQL variant, so DuckDB's tests run (and PostgreSQL's skip) where it is missing."""
    if request.param == "duckdb":
        return str(tmp_path / "db.duckdb")
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def conn(store):
    """One autocommit connection to ``store``, prepared as ``capacity run`` prepares it before any
    batch (``db.prepare``: PostgreSQL's schemas and DuckDB's functions there)."""
    from capacity_assets.store import db

    db.prepare(store)
    conn = db.connect(store)
    yield conn
    conn.close()
