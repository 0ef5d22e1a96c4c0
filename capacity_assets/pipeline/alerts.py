"""Alerts when a run fails: a run-failure sensor that mails CAPACITY_ALERT_EMAIL.

The daemon (``capacity ui``, ``dg dev``) evaluates it. It watches every code location
(``monitor_all_code_locations``) and keeps the capacity jobs by name, because the runs of
`capacity run` are started in-process and carry no code location: a sensor limited to its own
location's jobs would never see them. A mail that cannot be delivered fails the sensor's tick, so
the UI shows why; Dagster moves the sensor's cursor past the run either way (a sensor's side effects
are not repeated), so the run is not mailed again.
"""

from __future__ import annotations

import dagster as dg

from capacity_assets.config import CapacitySettings
from capacity_assets.inputs.batching import batch_index, batch_keys
from capacity_assets.notify import alert
from capacity_assets.notify.smtp import SmtpUnavailable
from capacity_assets.pipeline.jobs import RANGE_END, RANGE_START
from capacity_assets.pipeline.resources import SmtpResource

SENSOR = "capacity_run_failure_alert"
MONITORED = ("capacity_forecast", "capacity_hierarchy", "capacity_freshness", "capacity_notify")
PARTITION_TAG = "dagster/partition"
FAILED_BATCHES = "failed_batches"  # batch_ledger's failure metadata: the batches not published


class AlertNotSent(RuntimeError):
    """The alert of a failed run could not be delivered (the sensor's tick fails with this)."""


def _run_batches(tags: dict, n_batches: int) -> list[str]:
    """The batches a run covered, from Dagster's partition tags ([] for an unpartitioned run)."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    first, last = tags.get(RANGE_START), tags.get(RANGE_END)
    if not first or not last:
        return []
    lo, hi = batch_index(first), batch_index(last)
    return [k for k in batch_keys(max(n_batches, hi + 1)) if lo <= batch_index(k) <= hi]


def _error_text(error) -> str:
    """The user's error inside Dagster's wrappers (a step's exception is wrapped once or twice)."""
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error.message


def describe(context: dg.RunFailureSensorContext, dagster_url: str, n_batches: int):
    """The failed run as plain values for ``notify.alert``."""
    run = context.dagster_run
    failed_steps = context.get_step_failure_events()
    steps = list(dict.fromkeys(e.step_key for e in failed_steps if e.step_key))
    error, exact = "", []
    for event in failed_steps:
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and FAILED_BATCHES in (user.metadata or {}):
            named = str(user.metadata[FAILED_BATCHES].value)
            exact += [b.strip() for b in named.split(",") if b.strip()]
        if not error:
            text = user.description if user is not None and user.description else ""
            error = alert.first_line(text or (_error_text(data.error) if data.error else ""))
    if not error:  # no step failed: a resource that could not start, a run that crashed
        run_error = getattr(context.failure_event.event_specific_data, "error", None)
        error = alert.first_line(
            _error_text(run_error) if run_error else context.failure_event.message or ""
        )
    covered = _run_batches(run.tags, n_batches)
    failed = list(dict.fromkeys(exact)) or covered
    return alert.RunFailure(
        job=run.job_name,
        run_id=run.run_id,
        batches=tuple(failed),
        published=tuple(b for b in covered if b not in failed),
        steps=tuple(steps),
        error=error,
        url=alert.run_url(dagster_url, run.run_id),
    )


def run_failure_alert(settings: CapacitySettings, smtp_configured: bool) -> dg.SensorDefinition:
    """On by default only where there is someone to tell and a server to tell them through."""
    recipients = settings.alert_recipients

    @dg.run_failure_sensor(
        name=SENSOR,
        monitor_all_code_locations=True,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING
        if recipients and smtp_configured
        else dg.DefaultSensorStatus.STOPPED,
        description="Mail CAPACITY_ALERT_EMAIL when a run of "
        + ", ".join(MONITORED)
        + " fails: the job, the batches not published, the failed steps, the first error line "
        "and a link to the run (CAPACITY_DAGSTER_URL). A mail that cannot be sent fails the tick.",
    )
    def capacity_run_failure_alert(context: dg.RunFailureSensorContext, smtp: SmtpResource):
        run = context.dagster_run
        if run.job_name not in MONITORED:
            return dg.SkipReason(f"run {run.run_id} of {run.job_name}: not a capacity job")
        if not recipients:
            return dg.SkipReason(
                f"run {run.run_id} of {run.job_name} failed; set CAPACITY_ALERT_EMAIL to be mailed"
            )
        failure = describe(context, settings.dagster_url, settings.batches)
        server = smtp.get()
        message = alert.compose(failure, recipients, server.sender)
        try:
            results = server.send([message])
        except SmtpUnavailable as e:
            raise AlertNotSent(
                f"the alert for the failed run {run.run_id} ({run.job_name}) was not sent: {e}"
            ) from None
        refused = [r for r in results if not r.ok]
        if refused:
            raise AlertNotSent(
                f"the alert for the failed run {run.run_id} ({run.job_name}) was not delivered "
                f"to every address: {refused[0].error}"
            )
        context.log.info(
            f"mailed the failure of run {run.run_id} ({run.job_name}) to {', '.join(recipients)}"
        )

    return capacity_run_failure_alert
