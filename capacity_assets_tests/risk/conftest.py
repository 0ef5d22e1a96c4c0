"""``postgres_server``: a PostgreSQL server for the pools' store test, started only when asked for."""

from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture
