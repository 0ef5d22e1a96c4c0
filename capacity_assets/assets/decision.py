"""Stage 3: the tournament (champions), the golden record (forecasts) and the risk list (risk_exceptions)."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from capacity_assets import risk, tournament
from capacity_assets.config import CapacitySettings
from capacity_assets.engines.registry import CONTENDERS
from capacity_assets.partitions import STORED_BY_BATCH, batches

# the weekly schedule refreshes everything on Mondays; a week and a day later it is overdue
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))
RESULTS = {f"{name}_results": dg.AssetIn() for name in CONTENDERS}


def _severity(name: str) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if name == "ERROR" else dg.AssetCheckSeverity.WARN


def _check(asset: str, c: tournament.Check) -> dg.AssetCheckResult:
    series = c.details.get("series") or []
    description = c.description if c.passed or not series else f"{c.description}: fails for {', '.join(series)}"
    return dg.AssetCheckResult(asset_key=asset, check_name=c.name, passed=bool(c.passed),
                               description=description, metadata={k: str(v) for k, v in c.details.items()})


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          ins={**RESULTS, "processed_data": dg.AssetIn()},
          check_specs=[dg.AssetCheckSpec("champion_mape", asset="champions", description=(
              "WARN when a series' champion MAPE exceeds CAPACITY_MAPE_WARN, ERROR when more than "
              "CAPACITY_MAPE_ERROR_SHARE of the batch does. Flags only: every series stays in the golden record."))],
          description="Per series: every contender's backtest MAPE, WAPE, MAE and interval coverage; the "
                      "champion is the lower MAPE (ties to Prophet), with a trust level.")
def champions(context: dg.AssetExecutionContext, settings: CapacitySettings, processed_data: pd.DataFrame, **results):
    by_model = {name: results[f"{name}_results"] for name in CONTENDERS}
    table = tournament.champions(by_model, processed_data, trust_medium=settings.mape_warn)
    wins = tournament.wins(table)
    check = tournament.mape_check(table, settings.mape_warn, settings.mape_error_share)
    median = tournament.median_champion_mape(table)
    context.log.info(f"{context.partition_key}: {len(table)} series; wins {wins}; median champion MAPE {median}")
    yield dg.Output(table, metadata={
        "series": len(table), **{f"wins_{k}": v for k, v in wins.items()},
        **{f"win_share_{k}": round(v / max(len(table), 1), 3) for k, v in wins.items()},
        "median_champion_mape": median,
        "trust": str(table["trust"].value_counts().to_dict()),
        "preview": dg.MetadataValue.md(tournament.markdown_preview(
            table.sort_values("champion_mape", ascending=False)[
                ["server_id", "resource", "champion", "champion_mape", "trust"]])),
    })
    worst = "\n".join(f"- {w['server_id']}/{w['resource']}: {w['champion_mape']}%" for w in check["worst"])
    yield dg.AssetCheckResult(
        check_name="champion_mape", passed=check["passed"],
        severity=_severity(check["severity"] or "WARN"),
        description=None if check["passed"] else (
            f"{check['n_over']} of {check['n_series']} series ({check['share_over']:.0%}) have a champion MAPE "
            f"above {settings.mape_warn:g}%"),
        metadata={"series_over": check["n_over"], "share_over": round(check["share_over"], 3),
                  "worst": dg.MetadataValue.md(worst or "none")})


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          freshness_policy=FRESHNESS,
          ins={**RESULTS, "champions": dg.AssetIn(), "processed_data": dg.AssetIn(), "skipped_series": dg.AssetIn()},
          check_specs=[
              dg.AssetCheckSpec("forecast_horizon", asset="forecasts", description="Every series has exactly the horizon's days."),
              dg.AssetCheckSpec("forecast_bounds_ordered", asset="forecasts", description="yhat_lower <= yhat <= yhat_upper."),
              dg.AssetCheckSpec("every_series_accounted", asset="forecasts",
                                description="Every series of processed_data is forecast or listed in skipped_series."),
          ],
          description="The golden record: each series' champion 180-day forecast with bounds, its MAPE, "
                      "trust level, and the run that produced it.")
def forecasts(context: dg.AssetExecutionContext, settings: CapacitySettings, champions: pd.DataFrame,
              processed_data: pd.DataFrame, skipped_series: pd.DataFrame, **results):
    by_model = {name: results[f"{name}_results"] for name in CONTENDERS}
    table = tournament.golden_record(by_model, champions, pd.Timestamp.now(tz="UTC").tz_localize(None), context.run_id)
    yield dg.Output(table, metadata={
        "series": int(table[["server_id", "resource"]].drop_duplicates().shape[0]), "rows": len(table),
        "models": str(table.drop_duplicates(["server_id", "resource"])["model"].value_counts().to_dict()),
        "run_id": context.run_id,
    })
    for c in tournament.forecast_checks(table, processed_data, skipped_series, settings.horizon_days):
        yield _check("forecasts", c)


@dg.asset(partitions_def=batches, group_name="decision", metadata=STORED_BY_BATCH, kinds={"duckdb"},
          freshness_policy=FRESHNESS,
          description="Series whose upper bound crosses CAPACITY_THRESHOLD within CAPACITY_RISK_DAYS, with their "
                      "owners (Unassigned where unknown), first breach date, severity and trust.")
def risk_exceptions(context: dg.AssetExecutionContext, settings: CapacitySettings, forecasts: pd.DataFrame,
                    business_hierarchy: pd.DataFrame, processed_data: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    table = risk.risk_exceptions(forecasts, business_hierarchy, processed_data,
                                 threshold=settings.threshold, risk_days=settings.risk_days)
    sev = table["severity"].value_counts().to_dict()
    context.log.info(f"{context.partition_key}: {len(table)} series at risk {sev}")
    return dg.Output(table, metadata={
        "series_at_risk": len(table), "critical": int(sev.get("critical", 0)), "warning": int(sev.get("warning", 0)),
        "departments": str(table["department"].value_counts().to_dict()),
        "preview": dg.MetadataValue.md(tournament.markdown_preview(table[
            ["server_id", "resource", "department", "first_breach_date", "days_to_breach", "severity", "trust"]])),
    })
