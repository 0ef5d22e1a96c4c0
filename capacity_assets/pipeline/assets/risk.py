"""Stage 4: the risk list (risk_exceptions)."""
import dagster as dg
import pandas as pd

from capacity_assets.forecasting import tournament
from capacity_assets.pipeline.assets.tournament import FRESHNESS
from capacity_assets.pipeline.partitions import STORED_BY_BATCH, batches
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.risk import breaches


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          freshness_policy=FRESHNESS,
          description="Series whose upper bound crosses CAPACITY_THRESHOLD within CAPACITY_RISK_DAYS, with their "
                      "owners (Unassigned where unknown), first breach date, severity and trust.")
def risk_exceptions(context: dg.AssetExecutionContext, settings: SettingsResource, forecasts: pd.DataFrame,
                    business_hierarchy: pd.DataFrame, processed_data: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    cfg = settings.get()
    table = breaches.risk_exceptions(forecasts, business_hierarchy, processed_data,
                                 threshold=cfg.threshold, risk_days=cfg.risk_days)
    sev = table["severity"].value_counts().to_dict()
    context.log.info(f"{context.partition_key}: {len(table)} series at risk {sev}")
    return dg.Output(table, metadata={
        "series_at_risk": len(table), "critical": int(sev.get("critical", 0)), "warning": int(sev.get("warning", 0)),
        "departments": str(table["department"].value_counts().to_dict()),
        "preview": dg.MetadataValue.md(tournament.markdown_preview(table[
            ["server_id", "resource", "department", "first_breach_date", "days_to_breach", "severity", "trust"]])),
    })
