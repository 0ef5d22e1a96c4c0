"""Running the whole graph: the hierarchy once, then one Dagster run per batch, batches in parallel.

Each batch is one run whose steps execute in one process (the in-process executor): a process per
step would pay the imports (benchmarks/README.md) each time. Batches run in a pool of ``workers`` spawned processes
(default: one per core), each importing once and taking batches until none are left. Runs are
recorded in the persistent instance, so `capacity ui` shows them.
"""
from __future__ import annotations

import multiprocessing
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


@dataclass
class RunOutcome:
    batches: list[BatchResult] = field(default_factory=list)
    seconds: float = 0.0
    unchanged: list[str] = field(default_factory=list)  # skipped: same fingerprint as the last success

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


def run_job(job_name: str, partition_key: str | None = None, verbose: bool = False,
            tags: dict | None = None) -> BatchResult:
    """Execute one job run against the persistent instance, with the configured executor.

    The default in-process executor runs here; any other (multiprocess, dask) goes through
    ``execute_job`` with a reconstructable job so its steps can run elsewhere.
    """
    import dagster as dg

    from capacity_assets.pipeline import definitions
    from capacity_assets.pipeline.instance import get_instance

    started = time.monotonic()
    instance = get_instance()
    run_config = VERBOSE_RUN_CONFIG if verbose else QUIET_RUN_CONFIG
    try:
        if definitions.settings.executor == "in_process" or partition_key is None:
            job = definitions.defs.resolve_job_def(job_name)
            result = job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False,
                                            run_config=run_config, tags=tags)
        else:
            result = dg.execute_job(dg.reconstructable(definitions.capacity_forecast_job), instance=instance,
                                    run_config=run_config, raise_on_error=False,
                                    tags={**(tags or {}), "dagster/partition": partition_key})
        return BatchResult(partition_key or job_name, result.success, result.run_id,
                           time.monotonic() - started, "" if result.success else _failure_text(result))
    except Exception as e:  # noqa: BLE001 - one batch's crash is reported, never the whole run's
        return BatchResult(partition_key or job_name, False, "", time.monotonic() - started,
                           f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")


def run_batches(keys: list[str], workers: int, verbose: bool = False, echo=print) -> RunOutcome:
    """Run every batch in ``keys`` with ``workers`` processes, echoing one line per finished batch.

    On Ctrl-C or SIGTERM the workers are stopped: a batch not yet published keeps its previous
    results in every table (see storage), finished batches stay, and the next run redoes the rest.
    """
    outcome = RunOutcome()
    started = time.monotonic()
    workers = max(1, min(workers, len(keys)))
    if not keys:
        return outcome
    if workers == 1:
        for i, k in enumerate(keys, 1):
            r = run_job("capacity_forecast", k, verbose)
            outcome.batches.append(r)
            echo(_line(r, i, len(keys), started))
    else:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        try:
            futures = {pool.submit(run_job, "capacity_forecast", k, verbose): k for k in keys}
            for i, fut in enumerate(as_completed(futures), 1):
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker killed mid-batch
                    r = BatchResult(futures[fut], False, error=f"worker died: {e}")
                outcome.batches.append(r)
                echo(_line(r, i, len(keys), started))
        except BaseException:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    outcome.batches.sort(key=lambda b: b.batch)
    outcome.seconds = time.monotonic() - started
    return outcome


def _line(r: BatchResult, i: int, n: int, started: float) -> str:
    status = "ok" if r.success else "FAILED"
    text = f"[{i}/{n}] {r.batch}: {status} in {r.seconds:.1f}s (elapsed {time.monotonic() - started:.0f}s)"
    if not r.success:
        text += "\n    " + r.error.replace("\n", "\n    ")
    return text
