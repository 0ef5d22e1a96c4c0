"""A batch's scenario tables from its scenario_forecasts: the risk list and the capacity plan under
each scenario, stacked with a ``scenario`` column. Pure pandas, so the assets only wire them."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from capacity_assets.schema import SCENARIO_PLAN, SCENARIO_RISK, conform, empty
from capacity_assets.whatif.apply import plan_of, resized_hierarchy, risk_list
from capacity_assets.whatif.compare import with_baseline
from capacity_assets.whatif.scenarios import Scenario


def by_scenario(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(scenario, its rows without the column) of a stacked frame, in the frame's order."""
    for name, rows in frame.groupby("scenario", sort=False, observed=True):
        yield str(name), rows.drop(columns="scenario").reset_index(drop=True)


def _stacked(parts: list[pd.DataFrame], contract: dict[str, str]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return conform(pd.concat(parts, ignore_index=True), contract) if parts else empty(contract)


def scenario_risk(forecasts, hierarchy, processed, baseline_risk, settings) -> pd.DataFrame:
    """Each scenario's risk list with the baseline's first breach and the days it moved."""
    return _stacked(
        [
            with_baseline(risk_list(golden, hierarchy, processed, settings), baseline_risk).assign(
                scenario=name
            )
            for name, golden in by_scenario(forecasts)
        ],
        SCENARIO_RISK,
    )


def scenario_plan(forecasts, hierarchy, scenarios: dict[str, Scenario], settings) -> pd.DataFrame:
    """Each scenario's capacity plan, in the sizes its resizes install."""
    return _stacked(
        [
            plan_of(
                golden,
                resized_hierarchy(scenarios[name], golden, hierarchy)
                if name in scenarios
                else hierarchy,
                settings,
            ).assign(scenario=name)
            for name, golden in by_scenario(forecasts)
        ],
        SCENARIO_PLAN,
    )
