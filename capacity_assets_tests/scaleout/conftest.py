"""The real servers these tests start (capacity_assets_tests/servers.py)."""

from capacity_assets_tests.servers import postgres_server  # noqa: F401 - a fixture
