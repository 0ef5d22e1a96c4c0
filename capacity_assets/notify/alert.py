"""The mail that tells the people who run the forecasts that a run failed.

Composed from plain values (job, run id, batches, steps, the first error line, the link), so the
Dagster sensor that gathers them (``pipeline.alerts``) stays thin and the wording is tested without
a run. One message goes to every address at once: those on call see who else was told.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from capacity_assets.inputs.batching import batch_index

MAX_ERROR_CHARS = 500  # a subject-like line, not a traceback: the run's page has the rest


@dataclass(frozen=True)
class RunFailure:
    """What a person needs to act on a failed run: ``batches`` were not published, ``published``
    are the run's other batches (published all the same), ``error`` is the first error line."""

    job: str
    run_id: str
    batches: tuple[str, ...] = ()
    published: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    error: str = ""
    url: str = ""


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, shortened to ``MAX_ERROR_CHARS``."""
    line = next((s.strip() for s in str(text or "").splitlines() if s.strip()), "")
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def run_url(base: str, run_id: str) -> str:
    """The run's page in the Dagster UI (``{base}/runs/{run_id}``), or '' without a base URL."""
    return f"{base.rstrip('/')}/runs/{run_id}" if base.strip() else ""


def span(batches: Iterable[str]) -> str:
    """``batch_03..batch_05, batch_08``: consecutive batch keys written as one range."""
    keys = sorted(set(batches), key=batch_index)
    parts: list[list[str]] = []
    for k in keys:
        if parts and batch_index(k) == batch_index(parts[-1][-1]) + 1:
            parts[-1].append(k)
        else:
            parts.append([k])
    return ", ".join(p[0] if len(p) == 1 else f"{p[0]}..{p[-1]}" for p in parts)


def subject(failure: RunFailure) -> str:
    where = ""
    if failure.batches:
        word = "batch" if len(failure.batches) == 1 else "batches"
        where = f" ({word} {span(failure.batches)})"
    return f"capacity_assets: {failure.job} run failed{where}"


def body(failure: RunFailure) -> str:
    lines = [f"The Dagster run {failure.run_id} of the job {failure.job} failed.", ""]
    if failure.batches:
        lines.append(f"Batches not published: {span(failure.batches)}")
    if failure.published:
        lines.append(f"Published all the same: {span(failure.published)}")
    if failure.steps:
        lines.append(f"Failed steps: {', '.join(failure.steps)}")
    lines.append(f"First error: {failure.error or '(no error message recorded)'}")
    lines.append("")
    lines.append(
        f"The run's page: {failure.url}"
        if failure.url
        else "Open the run in the Dagster UI (Runs, failed) for its logs; set CAPACITY_DAGSTER_URL "
        "to get a link here."
    )
    if failure.batches:
        again = " ".join(f"--batch {b}" for b in sorted(failure.batches, key=batch_index))
        lines += [
            "",
            "A batch that is not published keeps its previous results. Once the cause is fixed, "
            f"re-running those batches is enough: capacity run {again}",
        ]
    lines += ["", "Sent by capacity_assets' run-failure sensor (CAPACITY_ALERT_EMAIL)."]
    return "\n".join(lines) + "\n"


def compose(
    failure: RunFailure, recipients: Sequence[str], sender: str, now: datetime | None = None
) -> EmailMessage:
    """One plain-text message to every address in ``recipients``."""
    if not recipients:
        raise ValueError("no recipients: set CAPACITY_ALERT_EMAIL")
    msg = EmailMessage()
    msg["Subject"] = subject(failure)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(now or datetime.now(timezone.utc))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid("capacity-alert", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg["X-Capacity-Kind"] = "run-failure"
    msg["X-Capacity-Run-Id"] = failure.run_id
    msg.set_content(body(failure))
    return msg
