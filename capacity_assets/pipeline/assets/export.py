"""Stage 6: the forecasts in the monitoring stack (CAPACITY_PROM_TEXTFILE), after each run.

Not partitioned: it runs once per run, after the run's batch_ledger (every batch of the run is
published by then), and writes the file from everything the store has published, not from the
run's own batches, so runs of other batches at the same time each leave a whole, current file
(``export.textfile``). A run in which a batch failed does not reach it: the next run, or `capacity
export prometheus`, writes the file. It never goes through the IO manager: its output is a file,
and the tables it reads are already published.
"""

import dagster as dg

from capacity_assets.export.textfile import write_forecasts
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.store.monitoring import NothingPublished


@dg.asset(
    group_name="export",
    deps=["batch_ledger"],
    kinds={"prometheus"},
    description="Every published forecast in Prometheus' text format (node_exporter's textfile "
    "collector), rewritten atomically after each run when CAPACITY_PROM_TEXTFILE names a file: "
    "forecast and upper bound at 30, 90 and 180 days, days to breach, threshold, trust, and each "
    "batch's publication time.",
)
def prometheus_textfile(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    cfg = settings.get()
    if not cfg.prom_textfile:
        context.log.info("CAPACITY_PROM_TEXTFILE is not set: no Prometheus file written")
        return dg.MaterializeResult(
            metadata={"written": "nothing: CAPACITY_PROM_TEXTFILE is not set"}
        )
    try:
        counts = write_forecasts(cfg.database, cfg.prom_textfile, cfg.prom_server_label)
    except NothingPublished as e:  # every series skipped: the run says so, this is not its failure
        context.log.warning(f"{cfg.prom_textfile} not written: {e}")
        return dg.MaterializeResult(metadata={"written": f"nothing: {e}"})
    context.log.info(
        f"wrote {cfg.prom_textfile}: {counts['series']} series, {counts['at_risk']} at risk, "
        f"{counts['batches']} batches"
    )
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(cfg.prom_textfile),
            "series": counts["series"],
            "at_risk": counts["at_risk"],
            "batches": counts["batches"],
            "bytes": counts["bytes"],
        }
    )
