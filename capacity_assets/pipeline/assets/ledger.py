"""Stage 5: batch_ledger, the record of what a batch's published results were made from."""

import dagster as dg
import pandas as pd

from capacity_assets.inputs.fingerprint import result_settings
from capacity_assets.pipeline.batches import each_batch, failures
from capacity_assets.pipeline.partitions import Layout
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.schema import BATCH_LEDGER
from capacity_assets.store import ledger, staging
from capacity_assets.store.db import reading

BACKFILL_TAG = "dagster/backfill"


def _same_work(context: dg.AssetExecutionContext, run_id: str) -> bool:
    """Whether processed_data's run ``run_id`` is this run, or a run of the same UI backfill that
    succeeded (so it published the batch). A backfill that selects business_hierarchy too ("Materialize
    all") is split by Dagster: processed_data and the models in one run, champions onwards in the next."""
    if run_id == context.run.run_id:
        return True
    backfill = context.run.tags.get(BACKFILL_TAG)
    other = context.instance.get_run_by_id(run_id)
    return (
        backfill is not None
        and other is not None
        and other.tags.get(BACKFILL_TAG) == backfill
        and other.status == dg.DagsterRunStatus.SUCCESS
    )


def _failed_in(db: str, run_id: str, batch: str) -> str:
    """Why run ``run_id`` did not compute ``batch`` (a step failed for it), or ''."""
    with reading(db) as conn:
        return staging.failure_reasons(conn, run_id, [batch]).get(batch, "")


def _inputs_read(context: dg.AssetExecutionContext, db: str, batch: str) -> tuple[str, str]:
    """(fingerprint, code version) of the inputs the published processed_data read for ``batch``."""
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("processed_data"), asset_partitions=[batch]),
        limit=1,
    ).records
    if not found or not _same_work(context, found[0].run_id):
        raise dg.Failure(
            f"{batch}: batch_ledger records the inputs processed_data read in the same run (or an "
            f"earlier run of the same backfill); materialise it together with processed_data (the "
            f"whole batch)"
        )
    # an earlier run of the backfill that could not compute the batch published nothing of it, so what
    # this run read is last week's: its fingerprint would call stale results current
    why = _failed_in(db, found[0].run_id, batch) if found[0].run_id != context.run.run_id else ""
    if why:
        raise dg.Failure(
            f"{batch}: failed in run {found[0].run_id} of this backfill ({why}); not published"
        )
    meta = found[0].asset_materialization.metadata
    return meta["fingerprints"].value[batch], meta["code_version"].value


def ledger_assets(layout: Layout) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name="decision",
        **layout.per_batch(),
        ins={"forecasts": dg.AssetIn(), "business_hierarchy": dg.AssetIn()},
        deps=[
            "risk_exceptions",
            "capacity_plan",
            "forecast_history",
            "risk_history",
            "forecast_accuracy",
            "risk_calls",
            "risk_resolved",
            "scenario_forecasts",
            "scenario_risk",
            "scenario_plan",
        ],
        description="One row per batch: the run that published it, when, the fingerprint of the inputs, "
        "settings, code and library versions it was made from, and the hierarchy version its "
        "owners came from. Published in the same transaction as the batch's tables; a run in "
        "which some batches failed publishes the others and then fails, naming them.",
    )
    def batch_ledger(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        forecasts: pd.DataFrame,
        business_hierarchy: pd.DataFrame,
    ):
        cfg = settings.get()
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)

        def record(batch, forecasts, business_hierarchy):
            fp, code = _inputs_read(context, cfg.database, batch)
            return ledger.ledger_row(
                batch,
                context.run.run_id,
                fp,
                forecasts,
                result_settings(cfg),
                code,
                business_hierarchy,
                now,
            )

        rows = each_batch(
            context,
            "batch_ledger",
            {"forecasts": forecasts, "business_hierarchy": business_hierarchy},
            record,
            BATCH_LEDGER,
        )
        failed = failures(rows)
        yield dg.Output(
            rows,
            metadata={
                "published": ", ".join(rows["batch"]) or "none",
                "failed": ", ".join(failed) or "none",
                "series": int(rows["series"].sum()),
            },
        )
        if failed:  # the others are published by now; re-running only these is enough
            raise dg.Failure(
                f"{len(failed)} of {len(context.partition_keys)} batches failed and were not published "
                f"(their previous results stay): "
                + "; ".join(f"{b}: {why}" for b, why in failed.items()),
                metadata={"failed_batches": ", ".join(failed)},
            )

    return [batch_ledger]
