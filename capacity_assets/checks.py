"""Asset checks: pure functions from a batch's frame to an AssetCheckResult.

They run inside the asset that produced the frame (``check_specs``), so a check sees exactly what
was written to that partition, and a failing check names the series at fault.
"""
from __future__ import annotations

import dagster as dg
import pandas as pd

from capacity_assets.schema import series_names

SHOW = 10  # series named in a failing check's metadata


def values_in_range(processed: pd.DataFrame, asset: str = "processed_data") -> dg.AssetCheckResult:
    bad = processed[~processed["y"].between(0, 100)]  # NaN is out of range too
    return dg.AssetCheckResult(
        asset_key=asset, check_name="values_within_0_100", passed=bad.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if bad.empty else f"{len(bad)} values outside 0–100 or missing, e.g. {', '.join(series_names(bad, SHOW))}",
        metadata={"rows_out_of_range": len(bad), "series": ", ".join(series_names(bad, SHOW))})


def one_row_per_day(processed: pd.DataFrame, asset: str = "processed_data") -> dg.AssetCheckResult:
    dup = processed[processed.duplicated(["server_id", "resource", "ds"], keep=False)]
    return dg.AssetCheckResult(
        asset_key=asset, check_name="one_row_per_series_per_day", passed=dup.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if dup.empty else f"{len(dup)} duplicate series-days, e.g. {', '.join(series_names(dup, SHOW))}",
        metadata={"duplicate_rows": len(dup), "series": ", ".join(series_names(dup, SHOW))})


def batch_not_empty(processed: pd.DataFrame, batch: str, asset: str = "processed_data") -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name="batch_not_empty", passed=not processed.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=None if not processed.empty else f"{batch} has no series: no server's id hashes to it "
                                                     f"(fewer servers than batches?) or all its rows were invalid",
        metadata={"rows": len(processed)})


PROCESSED_CHECKS = [
    dg.AssetCheckSpec("values_within_0_100", asset="processed_data", blocking=True,
                      description="Every daily value is within 0–100 %."),
    dg.AssetCheckSpec("one_row_per_series_per_day", asset="processed_data", blocking=True,
                      description="Exactly one row per server, resource and day."),
    dg.AssetCheckSpec("batch_not_empty", asset="processed_data",
                      description="The batch holds at least one series."),
]
