"""Digests for app managers as Dagster sees them: a job that sends them, and a sensor that runs it
once the batches' risk_exceptions have settled (on by default only when SMTP is configured).

The SMTP password reaches the op through SmtpResource, bound by name (dg.EnvVar): never in run
config, tags or the UI.
"""

import dagster as dg

from capacity_assets.notify.run import notify
from capacity_assets.pipeline.resources import SettingsResource, SmtpResource

RISK = dg.AssetKey("risk_exceptions")


@dg.op(
    description="Mail each app manager their new or worsened exceptions; the notifications table "
    "makes every exception go out once. A failed send fails the run and is retried next time."
)
def send_digests(
    context: dg.OpExecutionContext, settings: SettingsResource, smtp: SmtpResource
) -> None:
    cfg = settings.get()
    summary = notify(cfg.database, smtp.get(), cfg.dashboard_url, log=context.log)
    context.log.info(
        f"digests: {summary['sent']} sent to {len(summary['recipients'])} recipients, "
        f"{len(summary['without_address'])} owners without an address"
    )
    if summary["failures"]:
        raise dg.Failure(
            f"{len(summary['failures'])} message(s) were not delivered and will be retried: "
            + "; ".join(f"{f['recipient']}: {f['error']}" for f in summary["failures"][:5])
        )


@dg.job(description="Send the app-manager digests (capacity notify).")
def capacity_notify():
    send_digests()


def digests_sensor(smtp_configured: bool) -> dg.SensorDefinition:
    """On by default only where SMTP is configured: elsewhere it would fail every run it starts."""

    @dg.sensor(
        job=capacity_notify,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING
        if smtp_configured
        else dg.DefaultSensorStatus.STOPPED,
        description="After risk_exceptions is materialised, send the digests once no forecast run is still "
        "queued or running (so a backfill mails each manager once, not once per batch).",
    )
    def digests_after_risk(context: dg.SensorEvaluationContext):
        records = context.instance.fetch_materializations(RISK, limit=1).records
        if not records:
            return dg.SkipReason("risk_exceptions has not been materialised yet")
        newest = records[0].storage_id
        if context.cursor and int(context.cursor) >= newest:
            return dg.SkipReason("no new risk_exceptions since the last digests")
        busy = context.instance.get_runs_count(
            dg.RunsFilter(
                job_name="capacity_forecast",
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            )
        )
        if busy:
            return dg.SkipReason(f"waiting for {busy} forecast run(s) to finish")
        context.update_cursor(str(newest))
        return dg.RunRequest(run_key=f"digests-{newest}")

    return digests_after_risk
