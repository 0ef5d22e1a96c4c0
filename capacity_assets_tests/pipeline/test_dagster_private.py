"""Dagster's private API that the staged IO manager relies on: fails loudly when an upgrade moves it."""

import inspect

import dagster as dg
import pandas as pd

from capacity_assets.pipeline import dagster_private


def test_private_symbols_still_exist_with_the_shape_we_use():
    assert inspect.isclass(dagster_private.DbIOManager) and inspect.isclass(
        dagster_private.TableSlice
    )
    assert {"table", "schema", "partition_dimensions"} <= set(dagster_private.TableSlice._fields)
    for method in ("handle_output", "load_input"):
        assert hasattr(dagster_private.DbTypeHandler, method)


def test_run_id_and_expected_tables_from_a_real_run():
    seen = {}

    class Probe(dg.IOManager):
        def handle_output(self, context, obj):
            seen["expected"] = dagster_private.expected_tables(context)

        def load_input(self, context):
            seen["run_id"] = dagster_private.run_id_of(context)
            return pd.DataFrame()

    parts = dg.StaticPartitionsDefinition(["a"])

    @dg.asset(partitions_def=parts)
    def first() -> pd.DataFrame:
        return pd.DataFrame()

    @dg.asset(partitions_def=parts)
    def second(first: pd.DataFrame) -> pd.DataFrame:
        return first

    result = dg.materialize([first, second], partition_key="a", resources={"io_manager": Probe()})
    assert result.success
    assert seen["expected"] == {"first", "second"} and seen["run_id"] == result.run_id
    assert dagster_private.run_id_of(object()) is None
