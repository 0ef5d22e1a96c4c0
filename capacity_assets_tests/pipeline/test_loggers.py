"""The console of a run: Dagster's provenance warning off it, every other warning on it, and all of
them still in the run's event log (the UI)."""

import dagster as dg

from capacity_assets.pipeline.loggers import console

PROVENANCE = (
    "Data version mismatch for asset AssetKey(['processed_data']). Data version from materialization "
    "within current step is `abc`. Data version from most recent materialization is `def`."
)


def test_the_console_drops_dagsters_provenance_warning_and_keeps_the_others(capfd):
    @dg.op
    def talk(context):
        context.log.warning(PROVENANCE)
        context.log.warning("8 series too short to forecast")

    @dg.job(logger_defs={"console": console})
    def job():
        talk()

    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}, instance=instance
    )
    assert result.success
    shown = capfd.readouterr()
    assert "8 series too short to forecast" in shown.err
    assert "Data version mismatch" not in shown.err + shown.out
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert PROVENANCE in logged


def test_every_job_of_the_code_location_uses_it():
    from capacity_assets.pipeline.definitions import defs

    defs = defs()
    for name in (
        "capacity_forecast",
        "capacity_hierarchy",
        "capacity_freshness",
        "capacity_notify",
    ):
        assert defs.resolve_job_def(name).loggers["console"] is console, name
