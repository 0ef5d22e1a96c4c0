"""What Dagster users read in the catalog (issue 24, item 7): every asset's owners (CAPACITY_OWNERS),
code version, kinds, and the column schema of every table, which must be the table a run writes."""

import duckdb
import pytest

from capacity_assets import __version__, config
from capacity_assets.inputs.fingerprint import code_version
from capacity_assets.pipeline.definitions import build_defs

OWNERS = "team:capacity, ann.lee@example.com"


def specs(defs) -> dict:
    """asset name -> its AssetSpec, for every asset of ``defs``."""
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): next(s for s in graph.assets_def_for_key(key).specs if s.key == key)
        for key in graph.get_all_asset_keys()
    }


@pytest.fixture
def catalog(monkeypatch, tiny_run) -> dict:
    """The specs of the definitions built from the tiny run's environment plus CAPACITY_OWNERS."""
    for name, value in {**tiny_run["env"], "CAPACITY_OWNERS": OWNERS}.items():
        monkeypatch.setenv(name, value)
    return specs(build_defs(config.load()))


def stored(db: str) -> dict[str, list[tuple[str, str]]]:
    """table -> [(column, type)] of the tiny run's database, in table order."""
    with duckdb.connect(db, read_only=True) as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = 'main' order by table_name, ordinal_position"
        ).fetchall()
    out: dict[str, list] = {}
    for table, column, kind in rows:
        out.setdefault(table, []).append((column, kind))
    return out


def test_every_asset_has_owners_a_code_version_and_kinds(catalog):
    assert len(catalog) >= 17
    for name, spec in catalog.items():
        assert list(spec.owners) == ["team:capacity", "ann.lee@example.com"], name
        assert spec.code_version and spec.code_version.startswith(
            f"{__version__}+src-{code_version()}"
        ), name
        assert "python" in spec.kinds, (name, spec.kinds)
    # a model's code version moves with the library that fits it (a new Prophet moves forecasts)
    from importlib.metadata import version

    assert f"+prophet-{version('prophet')}+cmdstanpy-" in catalog["prophet_results"].code_version
    assert f"+xgboost-{version('xgboost')}" in catalog["challenger_results"].code_version
    assert {"prophet", "duckdb", "pandas"} <= catalog["prophet_results"].kinds
    assert "xgboost" in catalog["challenger_results"].kinds


def test_every_table_has_the_column_schema_of_the_table_a_run_writes(catalog, tiny_run):
    tables = stored(tiny_run["db"])
    hierarchy = [c for c, _ in tables["business_hierarchy"]]
    extras = [c for c in hierarchy if c not in ("server_id", "department", "app_manager")]
    assert extras, "the tiny fleet's hierarchy has extra columns (they follow the contract)"
    with_schema = {n: s for n, s in catalog.items() if "dagster/column_schema" in s.metadata}
    for name, spec in catalog.items():
        if name not in with_schema:  # not a table of the store: a file, say
            assert name not in tables, f"{name} is a table without a column schema"
            continue
        assert name in tables, f"{name} has a column schema but the run wrote no table"
        columns = spec.metadata["dagster/column_schema"].columns
        got = tables[name][: len(columns)]
        assert [c.name for c in columns] == [c for c, _ in got], name
        assert [c.type for c in columns] == [t for _, t in got], name
        assert all(c.description for c in columns), name
        rest = [c for c, _ in tables[name][len(columns) :]]
        assert rest == (extras if name in ("business_hierarchy", "risk_exceptions") else []), name
        assert {"duckdb", "pandas"} <= spec.kinds and "postgres" not in spec.kinds, name
    assert "prometheus_textfile" not in with_schema or "prometheus_textfile" in tables


def test_a_postgres_store_shows_as_postgres(monkeypatch, tiny_run):
    for name, value in tiny_run["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAPACITY_DB", "postgresql://capacity@127.0.0.1:5432/capacity")
    forecasts = specs(build_defs(config.load()))["forecasts"]
    assert "postgres" in forecasts.kinds and "duckdb" not in forecasts.kinds
