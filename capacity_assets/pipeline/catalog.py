"""What the Dagster catalog shows of every asset: owners, code version, column schema and kinds.

Built once per code location from the settings (owners: CAPACITY_OWNERS; the store: DuckDB or
PostgreSQL) and from ``schema.py``'s contracts, so the catalog never disagrees with the tables.

``code_version`` is what Dagster compares to mark an asset stale: the package version, the hash of
the package's sources that ``batch_ledger`` records as its ``code_version`` (the same rule that
makes `capacity run` recompute a batch), and, for a model, the versions of the library that fits
it. A code change or a library upgrade therefore shows the assets it touches, and everything
downstream, as stale in the UI; nothing has to be bumped by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import dagster as dg

from capacity_assets import __version__
from capacity_assets.inputs.fingerprint import code_version
from capacity_assets.schema import SQL_TYPES, describe, table_contracts
from capacity_assets.store.postgres import is_postgres

# the libraries whose versions change an engine's results, and the kind the catalog shows for it
ENGINE_LIBRARIES = {
    "prophet": ("prophet", "cmdstanpy"),
    "challenger": ("xgboost",),
    "ets": ("statsforecast",),
}
ENGINE_KINDS = {"prophet": "prophet", "challenger": "xgboost", "ets": "statsforecast"}


def _library_versions(names: tuple[str, ...]) -> str:
    out = []
    for name in names:
        try:
            out.append(f"{name}-{version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}-missing")
    return "+".join(out)


STORES = {"duckdb", "postgres"}


@dataclass(frozen=True)
class Catalog:
    """The catalog entries of one code location's assets."""

    owners: tuple[str, ...]
    store: str  # "duckdb" or "postgres": the kind of every table
    contracts: dict  # table -> columns (schema.table_contracts)

    def code_version(self, asset: str) -> str:
        libraries = _library_versions(ENGINE_LIBRARIES.get(asset.removesuffix("_results"), ()))
        source = f"{__version__}+src-{code_version()}"
        return source + (f"+{libraries}" if libraries else "")

    def column_schema(self, table: str) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[
                dg.TableColumn(name=c, type=SQL_TYPES[t], description=describe(table, c))
                for c, t in self.contracts[table].items()
            ]
        )

    def apply(self, spec: dg.AssetSpec) -> dg.AssetSpec:
        """``spec`` with its owners, code version and kinds, and, for a table of the store, its
        column schema and the store as its kind (whatever the asset declared)."""
        name = spec.key.to_user_string()
        kinds, metadata = {*spec.kinds, "python"}, dict(spec.metadata)
        if name in self.contracts:
            engine = ENGINE_KINDS.get(name.removesuffix("_results"))
            kinds = (kinds - STORES) | {"pandas", self.store} | ({engine} if engine else set())
            metadata["dagster/column_schema"] = self.column_schema(name)
            metadata["dagster/table_name"] = f"main.{name}"
        return spec.replace_attributes(
            owners=[*spec.owners, *(o for o in self.owners if o not in spec.owners)],
            code_version=spec.code_version or self.code_version(name),
            kinds=kinds,
            metadata=metadata,
        )


def catalog(settings) -> Catalog:
    """The catalog of the code location built from ``settings``."""
    return Catalog(
        owners=settings.owner_list,
        store="postgres" if is_postgres(settings.db) else "duckdb",
        contracts=table_contracts(settings.contenders),
    )
