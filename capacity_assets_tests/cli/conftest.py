"""The real servers the CLI tests start (capacity_assets_tests/servers.py): test_integrity runs
against PostgreSQL as well as DuckDB."""

from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture
