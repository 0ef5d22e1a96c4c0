"""A DuckDB file with a remote Dask scheduler is refused before anything runs; a PostgreSQL URL
without the optional driver says what to install."""

import sys

import pytest

from capacity_assets.store.db import StorageError
from capacity_assets.store.postgres import PgConnection
from capacity_assets_tests.conftest import capacity


def test_a_duckdb_path_with_a_remote_dask_address_is_refused_before_anything_runs(tmp_path):
    env = {
        "CAPACITY_EXECUTOR": "dask",
        "CAPACITY_DASK_ADDRESS": "tcp://127.0.0.1:1",
        "CAPACITY_DB": str(tmp_path / "cap.duckdb"),
        "DAGSTER_HOME": str(tmp_path / ".dagster"),
    }
    proc = capacity("run", cwd=tmp_path, env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    # why, and what to set
    assert "cannot share one DuckDB file" in proc.stderr
    assert "set CAPACITY_DB=postgresql://" in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing ran: no database, no instance, no demo fleet written
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_postgresql_url_without_the_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql", None)  # import fails as uninstalled
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql.dbapi", None)
    with pytest.raises(StorageError, match=r"pip install 'capacity_assets\[postgres\]'"):
        PgConnection("postgresql://capacity:secret@127.0.0.1:1/capacity")
