"""The scenarios of a file on the published results, without refitting: what `capacity whatif`
prints.

The baseline is what was published (risk_exceptions, capacity_plan), judged with the settings the
published batches were made with (batch_ledger), so a scenario's series are recomputed exactly as
the pipeline computed the baseline's and every other series keeps its published row.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd

from capacity_assets.whatif import compare
from capacity_assets.whatif.apply import apply, involved, outcome
from capacity_assets.whatif.scenarios import Fleet, Scenario, check

# settings that decide a risk list or a plan, taken from the published batches when they agree
JUDGED_WITH = (
    "threshold",
    "threshold_cpu",
    "threshold_memory",
    "threshold_disk",
    "threshold_network",
    "target",
    "target_cpu",
    "target_memory",
    "target_disk",
    "target_network",
    "risk_days",
    "lead_days",
    "reclaim_below",
    "round_gb",
)


@dataclass
class Result:
    name: str
    difference: dict  # compare.difference: what --json prints
    notes: list[str]
    risk: pd.DataFrame
    plan: pd.DataFrame


def published_settings(settings, ledger: pd.DataFrame) -> tuple[object, list[str]]:
    """``settings`` with the published batches' values of JUDGED_WITH where every batch agrees, and
    notes naming those that differ between batches (the current value is used for them)."""
    values: dict[str, set] = {}
    for text in ledger["settings"].dropna():
        for k, v in json.loads(text).items():
            if k in JUDGED_WITH:
                values.setdefault(k, set()).add(json.dumps(v))
    agreed = {k: json.loads(next(iter(v))) for k, v in values.items() if len(v) == 1}
    notes = [
        f"the published batches were judged with different {k} values; the current "
        f"{getattr(settings, k)} is used"
        for k, v in sorted(values.items())
        if len(v) > 1
    ]
    return dataclasses.replace(settings, **agreed), notes


def involved_servers(scenarios: tuple[Scenario, ...], published: dict[str, pd.DataFrame]) -> set:
    """The servers whose golden record the scenarios need (``store.whatif.read_published`` reads
    only theirs), once the file is checked against the published fleet: ScenarioError before any
    scenario is computed when it names what the published results do not hold."""
    fleet = published["fleet"]
    servers = set(fleet["server_id"].astype(str))
    if fleet.empty:
        return set()
    hierarchy = published["hierarchy"]
    check(
        scenarios,
        Fleet(
            frozenset(servers),
            hierarchy,
            pd.Timestamp(fleet["first_day"].min()).normalize(),
            pd.Timestamp(fleet["last_day"].max()).normalize(),
        ),
    )
    return set().union(*(involved(s, hierarchy, servers) for s in scenarios))


def whatif(
    scenarios: tuple[Scenario, ...], published: dict[str, pd.DataFrame], settings
) -> list[Result]:
    """Every scenario against the published baseline. ``published``: ``read_published``'s frames;
    its golden record needs only the servers of ``involved_servers`` (any more are left as they
    are)."""
    golden, hierarchy = published["forecasts"], published["hierarchy"]
    settings, notes = published_settings(settings, published["ledger"])
    base_risk, base_plan = published["risk"], published["plan"]
    server_ids = golden["server_id"].astype(str)
    out = []
    for scenario in scenarios:
        # only the rows a change can alter; every other series keeps its published result
        mine = involved(scenario, hierarchy, set(server_ids.unique()))
        applied = apply(scenario, golden[server_ids.isin(mine).to_numpy()], hierarchy)
        risk, plan = outcome(applied, base_risk, base_plan, published["actuals"], settings)
        unsized = compare.unsized_changes(plan, base_plan)
        extra = (
            [f"{unsized} add/reclaim row(s) changed on servers without a size (no units)"]
            if unsized
            else []
        )
        out.append(
            Result(
                scenario.name,
                compare.difference(scenario.name, risk, plan, base_risk, base_plan),
                [*notes, *applied.notes, *extra],
                risk,
                plan,
            )
        )
    return out
