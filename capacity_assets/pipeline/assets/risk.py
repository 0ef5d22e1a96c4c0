"""Stage 4: the risk list (risk_exceptions) and the capacity plan (capacity_plan)."""

import dagster as dg
import pandas as pd

from capacity_assets.forecasting import tournament
from capacity_assets.pipeline import checks
from capacity_assets.pipeline.batches import each_batch
from capacity_assets.pipeline.partitions import Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.risk import breaches, plan
from capacity_assets.risk.levels import levels
from capacity_assets.schema import CAPACITY_PLAN, RISK_EXCEPTIONS_STORED
from capacity_assets.track.kept import Kept, exception_status


def risk_assets(layout: Layout) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="decision",
        **layout.per_batch(),
        freshness_policy=checks.FRESHNESS,
        description="Series whose upper bound crosses their threshold (CAPACITY_THRESHOLD, per resource or per "
        "server) within CAPACITY_RISK_DAYS, with their owners (Unassigned where unknown), first "
        "breach date, severity, trust and the threshold they were judged against.",
    )
    def risk_exceptions(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
        processed_data: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        cfg = settings.get()
        record = Kept(cfg, context.partition_keys)

        def at_risk(batch, forecasts, business_hierarchy, processed_data):
            risk = breaches.risk_exceptions(
                forecasts,
                business_hierarchy,
                processed_data,
                risk_days=cfg.risk_days,
                thresholds=levels(cfg, forecasts, business_hierarchy),
            )
            return exception_status(cfg, batch, risk, forecasts, record)

        table = each_batch(
            context,
            "risk_exceptions",
            {
                "forecasts": forecasts,
                "business_hierarchy": business_hierarchy,
                "processed_data": processed_data,
            },
            at_risk,
            RISK_EXCEPTIONS_STORED,
        )
        sev = table["severity"].value_counts().to_dict()
        context.log.info(f"{len(table)} series at risk {sev}")
        return dg.Output(
            table,
            metadata={
                "series_at_risk": len(table),
                "critical": int(sev.get("critical", 0)),
                "warning": int(sev.get("warning", 0)),
                "departments": str(table["department"].value_counts().to_dict()),
                "preview": dg.MetadataValue.md(
                    tournament.markdown_preview(
                        table[
                            [
                                "server_id",
                                "resource",
                                "department",
                                "first_breach_date",
                                "days_to_breach",
                                "severity",
                                "trust",
                            ]
                        ]
                    )
                ),
            },
        )

    @dg.asset(
        group_name="decision",
        **layout.per_batch(),
        check_specs=checks.PLAN_CHECKS,
        description="Per series: how much capacity to add (by when: first crossing minus CAPACITY_LEAD_DAYS) or "
        "can be reclaimed, sized so the peak upper demand sits at the target utilisation, in units "
        "where the hierarchy gives server sizes; low-trust actions are marked for review.",
    )
    def capacity_plan(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ):
        cfg = settings.get()

        def planned(batch, forecasts, business_hierarchy):
            lv = levels(cfg, forecasts, business_hierarchy)
            return plan.capacity_plan(
                forecasts,
                business_hierarchy,
                thresholds=lv,
                targets=lv,
                lead_days=cfg.lead_days,
                reclaim_below=cfg.reclaim_below,
                round_gb=cfg.round_gb,
            )

        table = each_batch(
            context,
            "capacity_plan",
            {"forecasts": forecasts, "business_hierarchy": business_hierarchy},
            planned,
            CAPACITY_PLAN,
        )
        actions = table["action"].value_counts().to_dict()
        yield dg.Output(
            table,
            metadata={
                "series": len(table),
                **{f"action_{k}": int(v) for k, v in actions.items()},
                "review": int(table["review"].sum()),
                "preview": dg.MetadataValue.md(
                    tournament.markdown_preview(
                        table[
                            [
                                "server_id",
                                "resource",
                                "action",
                                "change_pct",
                                "change_units",
                                "unit",
                                "needed_by",
                                "review",
                            ]
                        ]
                    )
                ),
            },
        )
        yield checks.every_series_planned(table, forecasts)
        yield checks.add_has_needed_by(table)
        yield checks.low_trust_reviewed(table)

    return [risk_exceptions, capacity_plan]
