"""Pools: capacity and demand per pool (the hierarchy's `pool` column) in units, for the published
golden record and under each what-if scenario (``risk.pools``).

Not partitioned: a pool's servers sit in many batches, so, like prometheus_textfile, it runs once
per run after the run's batch_ledger and reads everything the store has published (the golden
record, scenario_forecasts, the hierarchy), not the run's own batches. It writes its two tables
itself (``store.pools``, one transaction): they are made from published tables, never staged.
Without a pool column they are written empty, so their columns are there for SQL and dashboards.
"""

import dagster as dg

from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.risk.pools import BASELINE, every_pool, pool_column, thresholds
from capacity_assets.store.db import exclusive
from capacity_assets.store.pools import read_pooled, write_pools
from capacity_assets.whatif.scenarios import ScenarioError, load


def _scenarios(context, cfg) -> dict:
    """name -> Scenario of CAPACITY_SCENARIOS (for its resizes); {} when unset or unreadable (the
    what-if assets fail the run on a bad file; the baseline's pools need none of it)."""
    if not cfg.scenarios.strip():
        return {}
    try:
        return {s.name: s for s in load(cfg.scenarios.strip())}
    except ScenarioError as e:
        context.log.warning(f"pools under scenarios skipped: {e}")
        return {}


@dg.multi_asset(
    group_name="pools",
    specs=[
        dg.AssetSpec(
            "pool_outlook",
            deps=["batch_ledger"],
            description="Per pool (the hierarchy's `pool` column) and resource, for the published "
            "golden record (scenario '') and each what-if scenario: servers (and those without a "
            "size), installed capacity and the pool's threshold in units, peak demand, the pool's "
            "own first breach date, headroom in units and how many more servers of the pool's "
            "median demand still fit. Empty without a pool column.",
        ),
        dg.AssetSpec(
            "pool_demand",
            deps=["batch_ledger"],
            description="Per pool, resource, scenario and forecast day: capacity, threshold, "
            "demand and upper demand in units (what the dashboard's Pools view draws).",
        ),
    ],
)
def pool_assets(context: dg.AssetExecutionContext, settings: SettingsResource):
    cfg = settings.get()
    # one run at a time from reading to writing: of two runs finishing together, the one that read
    # the store later writes last, so the tables never go back to an older publication
    with exclusive(cfg.database, "pools"):
        published = read_pooled(cfg.database)
        outlook, daily, notes = every_pool(published, thresholds(cfg), _scenarios(context, cfg))
        write_pools(cfg.database, outlook, daily)
    for note in notes:
        context.log.warning(note)
    if pool_column(published["hierarchy"]) is None:
        context.log.info("the hierarchy has no pool column: pool_outlook and pool_demand are empty")
    base = outlook[outlook["scenario"] == BASELINE]
    meta = {
        "pools": int(base["pool"].nunique()),
        "scenarios": int(outlook["scenario"].nunique()) - int(len(base) > 0),
        "pool_resources_breaching": int(base["first_breach_date"].notna().sum()),
    }
    yield dg.MaterializeResult(
        asset_key="pool_outlook", metadata={**meta, "dagster/row_count": len(outlook)}
    )
    yield dg.MaterializeResult(asset_key="pool_demand", metadata={"dagster/row_count": len(daily)})
