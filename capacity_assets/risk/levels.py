"""The threshold and target each series is judged against, from the settings and the hierarchy."""

from __future__ import annotations

import pandas as pd

from capacity_assets.risk.thresholds import levels_table


def levels(settings, series: pd.DataFrame, hierarchy: pd.DataFrame) -> pd.DataFrame:
    """Threshold and target per series (settings, per-resource and per-server overrides)."""
    if "server_id" in hierarchy.columns:
        # only the batch's servers: the whole fleet's would be re-read per batch
        hierarchy = hierarchy[hierarchy["server_id"].isin(series["server_id"].unique())]
    return levels_table(
        series,
        hierarchy,
        settings.threshold,
        settings.threshold_per_resource,
        settings.target,
        settings.target_per_resource,
    )[0]
