"""Running the whole graph: the hierarchy once, then one Dagster run per batch, batches in parallel.

Each batch is one run whose steps execute in one process (the in-process executor): a process per
step would pay ~2 s of imports each time. Batches run in a pool of ``workers`` spawned processes
(default: one per core), each importing once and taking batches until none are left. Runs are
recorded in the persistent instance, so `capacity ui` shows them.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class BatchResult:
    batch: str
    success: bool
    run_id: str = ""
    seconds: float = 0.0
    error: str = ""
    skipped_unchanged: bool = False


@dataclass
class RunOutcome:
    batches: list[BatchResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[BatchResult]:
        return [b for b in self.batches if not b.success]


def _failure_text(result) -> str:
    lines = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data.error:
            err = event.step_failure_data.error
            while err.cause is not None and "capacity_assets" not in (err.message or ""):
                err = err.cause
            lines.append(f"{event.step_key}: {err.message.strip()}")
    return "\n".join(lines) or "run failed"


def run_job(job_name: str, partition_key: str | None = None, verbose: bool = False) -> BatchResult:
    """Execute one job run in this process against the persistent instance."""
    from capacity_assets.definitions import defs
    from capacity_assets.instance import get_instance

    started = time.monotonic()
    job = defs.resolve_job_def(job_name)
    instance = get_instance()
    try:
        result = job.execute_in_process(
            partition_key=partition_key, instance=instance, raise_on_error=False,
            run_config=VERBOSE_RUN_CONFIG if verbose else QUIET_RUN_CONFIG)
        return BatchResult(partition_key or job_name, result.success, result.run_id,
                           time.monotonic() - started, "" if result.success else _failure_text(result))
    except Exception as e:  # noqa: BLE001 - one batch's crash is reported, never the whole run's
        return BatchResult(partition_key or job_name, False, "", time.monotonic() - started,
                           f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")


def run_batches(keys: list[str], workers: int, verbose: bool = False, echo=print) -> RunOutcome:
    """Run every batch in ``keys`` with ``workers`` processes, echoing one line per finished batch."""
    outcome = RunOutcome()
    started = time.monotonic()
    workers = max(1, min(workers, len(keys)))
    if workers == 1:
        results = (run_job("capacity_forecast", k, verbose) for k in keys)
        for i, r in enumerate(results, 1):
            outcome.batches.append(r)
            echo(_line(r, i, len(keys), started))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_job, "capacity_forecast", k, verbose): k for k in keys}
            for i, fut in enumerate(as_completed(futures), 1):
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker killed mid-batch
                    r = BatchResult(futures[fut], False, error=f"worker died: {e}")
                outcome.batches.append(r)
                echo(_line(r, i, len(keys), started))
    outcome.batches.sort(key=lambda b: b.batch)
    outcome.seconds = time.monotonic() - started
    return outcome


def _line(r: BatchResult, i: int, n: int, started: float) -> str:
    status = "ok" if r.success else "FAILED"
    text = f"[{i}/{n}] {r.batch}: {status} in {r.seconds:.1f}s (elapsed {time.monotonic() - started:.0f}s)"
    if not r.success:
        text += "\n    " + r.error.replace("\n", "\n    ")
    return text


def default_workers() -> int:
    return os.cpu_count() or 2
