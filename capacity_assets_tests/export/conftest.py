"""The real servers the export tests start (capacity_assets_tests/servers.py): the file is read
from PostgreSQL as well as DuckDB."""

from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture
