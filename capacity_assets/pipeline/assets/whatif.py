"""What if: the golden record, the risk list and the capacity plan under each scenario of
CAPACITY_SCENARIOS (``whatif/``), per batch like the rest and published with the batch. Without
the setting the tables are written empty, so their columns are there for SQL and dashboards."""

import dagster as dg
import pandas as pd

from capacity_assets.forecasting import tournament
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.partitions import Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.schema import (
    SCENARIO_FORECASTS,
    SCENARIO_PLAN,
    SCENARIO_RISK,
    conform,
    empty,
)
from capacity_assets.store.whatif import read_forecasts
from capacity_assets.whatif import tables
from capacity_assets.whatif.apply import apply
from capacity_assets.whatif.scenarios import Fleet, Scenario, ScenarioError, check, load, selected


def _scenarios(cfg) -> tuple[Scenario, ...]:
    if not cfg.scenarios.strip():
        return ()
    try:
        return load(cfg.scenarios.strip())
    except ScenarioError as e:
        raise dg.Failure(str(e), allow_retries=False) from None


def _counterparts(context, cfg, scenarios, forecasts, hierarchy) -> pd.DataFrame:
    """The golden record of every server a migration or a retirement moves load from or to: a
    batch needs the other side of a move, which usually sits in another batch. This run's record
    where it holds the server, else the published one."""
    known = set(forecasts["server_id"].astype(str)) | set(hierarchy["server_id"].astype(str))
    servers: set[str] = set()
    for scenario in scenarios:
        for change in scenario.changes:
            if change.kind == "migrate":
                servers |= {change.from_server, change.to_server}
            elif change.kind == "retire" and change.to_server is not None:
                servers |= {change.to_server, *selected(change, hierarchy, known)}
    here = forecasts[forecasts["server_id"].astype(str).isin(servers)]
    elsewhere = servers - set(here["server_id"].astype(str))
    if not elsewhere:
        return here
    published = read_forecasts(cfg.database, elsewhere)
    context.log.info(
        f"moves to or from servers outside this run use their published golden record: "
        f"{', '.join(sorted(set(published['server_id'].astype(str))))}"
        if len(published)
        else "no golden record is published for " + ", ".join(sorted(elsewhere))
    )
    return pd.concat([here, published], ignore_index=True) if len(published) else here


def whatif_assets(layout: Layout) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="what_if",
        **layout.per_batch(),
        description="The golden record under each scenario of CAPACITY_SCENARIOS (added load, "
        "resizes, migrations, retirements applied to the unclipped demand from their dates): the "
        "forecasts' columns with `scenario`. Empty when CAPACITY_SCENARIOS is unset.",
    )
    def scenario_forecasts(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        scenarios = _scenarios(cfg)
        extra = forecasts.iloc[0:0]
        if scenarios and len(forecasts):
            try:  # the whole run's servers and days, before any batch: one clear refusal
                check(
                    scenarios,
                    Fleet.of(forecasts, business_hierarchy, business_hierarchy["server_id"]),
                )
            except ScenarioError as e:
                raise dg.Failure(str(e), allow_retries=False) from None
            extra = _counterparts(context, cfg, scenarios, forecasts, business_hierarchy)

        def adjusted(batch, forecasts, business_hierarchy):
            if not scenarios or forecasts.empty:
                return empty(SCENARIO_FORECASTS)
            mine = set(forecasts["server_id"].astype(str))
            others = extra[~extra["server_id"].astype(str).isin(mine)]
            golden = pd.concat([forecasts, others], ignore_index=True) if len(others) else forecasts
            parts = []
            for scenario in scenarios:
                applied = apply(scenario, golden, business_hierarchy)
                for note in applied.notes:
                    context.log.warning(f"{batch}: {note}")
                rows = applied.frame[applied.frame["batch"] == batch]
                parts.append(rows.assign(scenario=scenario.name))
            return conform(pd.concat(parts, ignore_index=True), SCENARIO_FORECASTS)

        table = each_batch(
            context,
            "scenario_forecasts",
            {"forecasts": forecasts, "business_hierarchy": business_hierarchy},
            adjusted,
            SCENARIO_FORECASTS,
        )
        return dg.Output(
            table,
            metadata={
                "scenarios": ", ".join(s.name for s in scenarios) or "none (CAPACITY_SCENARIOS)",
                "changes": sum(len(s.changes) for s in scenarios),
            },
        )

    @dg.asset(
        group_name="what_if",
        **layout.per_batch(),
        description="The risk list under each scenario (risk_exceptions' rule on scenario_forecasts), "
        "with the baseline's first breach date (empty: the scenario adds the exception) and "
        "`days_moved`, the scenario's first breach minus the baseline's (negative: sooner).",
    )
    def scenario_risk(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        scenario_forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
        processed_data: pd.DataFrame,
        risk_exceptions: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()

        def at_risk(batch, scenario_forecasts, business_hierarchy, processed_data, risk_exceptions):
            return tables.scenario_risk(
                scenario_forecasts, business_hierarchy, processed_data, risk_exceptions, cfg
            )

        table = each_batch(
            context,
            "scenario_risk",
            {
                "scenario_forecasts": scenario_forecasts,
                "business_hierarchy": business_hierarchy,
                "processed_data": processed_data,
                "risk_exceptions": risk_exceptions,
            },
            at_risk,
            SCENARIO_RISK,
        )
        return dg.Output(
            table,
            metadata={
                "series_at_risk": dg.MetadataValue.json(
                    {str(k): int(v) for k, v in table["scenario"].value_counts().items()}
                ),
                "new": int(table["baseline_first_breach_date"].isna().sum()),
                "moved": int((table["days_moved"].fillna(0) != 0).sum()),
                "preview": dg.MetadataValue.md(
                    tournament.markdown_preview(
                        table[
                            [
                                "scenario",
                                "server_id",
                                "resource",
                                "first_breach_date",
                                "baseline_first_breach_date",
                                "days_moved",
                                "severity",
                            ]
                        ]
                    )
                ),
            },
        )

    @dg.asset(
        group_name="what_if",
        **layout.per_batch(),
        description="The capacity plan under each scenario (capacity_plan's rule on "
        "scenario_forecasts), in the sizes the scenario's resizes install.",
    )
    def scenario_plan(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        scenario_forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        scenarios = {s.name: s for s in _scenarios(cfg)}

        def planned(batch, scenario_forecasts, business_hierarchy):
            return tables.scenario_plan(scenario_forecasts, business_hierarchy, scenarios, cfg)

        table = each_batch(
            context,
            "scenario_plan",
            {"scenario_forecasts": scenario_forecasts, "business_hierarchy": business_hierarchy},
            planned,
            SCENARIO_PLAN,
        )
        adds = table[table["action"] == "add"]["scenario"].value_counts()
        return dg.Output(
            table,
            metadata={"adds": dg.MetadataValue.json({str(k): int(v) for k, v in adds.items()})},
        )

    return [scenario_forecasts, scenario_risk, scenario_plan]
