"""Running the whole graph: the hierarchy once, then the batches, a range of them per Dagster run.

Each run covers a contiguous range of batches and executes its steps in one process (the
in-process executor), so Dagster's per-run cost (process start and imports, run bookkeeping, the
IO manager's connections, one read of the input) is paid once per worker, not once per batch: the
batches are split into one range per worker, and ``workers`` processes run them in parallel. The
workers fork from a server that imported the heavy libraries once, so each starts without paying
for them. Runs are recorded in the persistent instance, so `capacity ui` shows them. A run in which
some batches fail publishes the others (see ``pipeline.batches``); the batch_ledger says which.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from capacity_assets.inputs.inspected import Inspected

# a worker process costs about 3 s before its first step (imports, the instance, its run): below
# this many servers to run per worker it costs more than the fitting it takes over
SERVERS_PER_WORKER = 25
# imported once by the fork server, so a worker starts already holding them (about 4 s of imports
# each otherwise); only libraries: the project's own modules read the settings when they load
PRELOAD = [
    "pandas",
    "pyarrow",
    "duckdb",
    "dagster",
    "dagster_duckdb_pandas",
    "xgboost",
    "statsforecast.models",
]
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
VERBOSE_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# in a worker process: how its runs tell the launcher what they are doing (``_tell_through``)
_TELL: Callable[[tuple], object] | None = None


class Watcher(Protocol):
    """Who shows `capacity run`'s progress (``cli.progress``). A range is named by its first batch.
    Workers' news arrives on a thread of the launcher's, so every method must be quick and safe to
    call from another thread."""

    def planned(self, ranges: list[list[str]], servers: dict[str, int]) -> None: ...
    def started(self, first: str) -> None: ...
    def steps(self, first: str, names: list[str]) -> None: ...
    def step(self, first: str, name: str) -> None: ...
    def batch(self, first: str, done: int, total: int) -> None: ...
    def series(self, first: str, n: int) -> None: ...
    def finished(self, results: list[BatchResult]) -> None: ...


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
    unchanged: list[str] = field(
        default_factory=list
    )  # skipped: same fingerprint as the last publication

    @property
    def failed(self) -> list[BatchResult]:
        return [b for b in self.batches if not b.success]


def _step_errors(result):
    """(step key, error) of every failed step of a run, the error with its chain of causes."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data.error:
            yield event.step_key, event.step_failure_data.error


def _interrupted(result) -> bool:
    """Whether a run failed because it was interrupted (Ctrl-C, SIGTERM): Dagster turns the signal
    into a step failure, so without this the command would go on to the next range and exit 1."""
    for _, err in _step_errors(result):
        while err is not None:
            if err.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
            err = err.cause
    return False


def _failure_text(result) -> str:
    lines = []
    for step, err in _step_errors(result):
        while err.cause is not None and "capacity_assets" not in (err.message or ""):
            err = err.cause
        lines.append(f"{step}: {err.message.strip()}")
    if not lines:  # no step failed: a resource that could not start (settings on a worker), say
        for event in result.all_events:
            err = getattr(event.event_specific_data, "error", None)
            if err is not None and event.event_type_value != "STEP_FAILURE":
                lines.append(f"{event.step_key or event.event_type_value}: {err.message.strip()}")
                break
    return "\n".join(lines) or "run failed"


def run_job(
    job_name: str,
    keys: list[str] | None = None,
    verbose: bool = False,
    inspected: str = "",
    tell: Callable[[tuple], object] | None = None,
) -> list[BatchResult]:
    """Execute one run of ``job_name`` (over the contiguous range ``keys``, for the batch job) against
    the persistent instance with the configured executor; one result per batch (or one for the job).
    ``inspected``: what the launcher learnt of the input for these batches (``inputs.inspected``),
    so the run reads only their rows. ``tell`` (in a worker: the launcher's queue) hears the range's
    steps and batches as they go, from the in-process executor (others run steps elsewhere).

    The default in-process executor runs here; any other (multiprocess, dask) goes through
    ``execute_job`` with a reconstructable job so its steps can run elsewhere.
    """
    import dagster as dg

    from capacity_assets import config
    from capacity_assets.pipeline import definitions
    from capacity_assets.pipeline.instance import get_instance
    from capacity_assets.pipeline.jobs import range_tags
    from capacity_assets.pipeline.resources import settings_tag
    from capacity_assets.store import ledger

    started = time.monotonic()
    settings = config.load()  # now: `capacity demo --weeks` points CAPACITY_METRICS at each week
    instance = get_instance()
    run_config = VERBOSE_RUN_CONFIG if verbose else QUIET_RUN_CONFIG
    if keys and inspected:
        run_config = {**run_config, "ops": {"processed_data": {"config": {"inspected": inspected}}}}
    names = keys or [job_name]
    # the result settings ride along, so a step on another host checks its own against them
    tags = {**(range_tags(keys[0], keys[-1]) if keys else {}), **settings_tag(settings)}
    try:
        if settings.executor == "in_process" or not keys:
            job = definitions.build_defs(settings).resolve_job_def(job_name)
            run_id = str(uuid.uuid4())
            with _telling(tell or _TELL, instance, run_id, job, keys):
                result = job.execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config=run_config,
                    tags=tags,
                    run_id=run_id,
                )
        else:
            if keys:  # its steps run elsewhere: the display can only say the run is going
                _say(tell or _TELL, "started", keys[0])
            result = dg.execute_job(
                dg.reconstructable(definitions.capacity_forecast_job),
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
                tags=tags,
            )
    except Exception as e:  # noqa: BLE001 - one run's crash is reported, never the whole command's
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        return [BatchResult(n, False, "", time.monotonic() - started, error) for n in names]
    if not result.success and _interrupted(result):
        raise KeyboardInterrupt  # the command stops here, and a worker's caller sees it too
    seconds = time.monotonic() - started
    if result.success or not keys:
        return [
            BatchResult(
                n,
                result.success,
                result.run_id,
                seconds,
                "" if result.success else _failure_text(result),
            )
            for n in names
        ]
    # a failed range run may still have published some of its batches: the ledger says which
    book = ledger.read(settings.database)
    published = set(book.loc[book["run_id"] == result.run_id, "batch"])
    error = _failure_text(result)
    return [
        BatchResult(k, k in published, result.run_id, seconds, "" if k in published else error)
        for k in keys
    ]


@contextmanager
def _telling(tell, instance, run_id: str, job, keys: list[str] | None):
    """While a range's run executes in this process, tell ``tell`` its steps (Dagster's step starts)
    and batches (``batches.WATCHERS``): small tuples, a few per batch and step, never failing the run."""
    if tell is None or not keys:
        yield
        return
    import dagster as dg

    from capacity_assets.pipeline import batches

    first = keys[0]

    def say(*news) -> None:
        _say(tell, *news)

    def on_event(event) -> None:
        if event.dagster_event_type == dg.DagsterEventType.STEP_START and event.step_key:
            say("step", first, event.step_key)

    def on_batch(what: str, batch, done: int, total: int, out) -> None:
        say("batch", first, done, total)
        if out is not None and what == "processed_data":
            say("series", first, int(out.groupby(["server_id", "resource"], observed=True).ngroups))

    say("steps", first, [n.name for n in job.graph.nodes_in_topological_order])
    instance.add_event_listener(run_id, on_event)  # the run id is new: it hears this run only
    batches.WATCHERS.append(on_batch)
    try:
        yield
    finally:
        batches.WATCHERS.remove(on_batch)


def _say(tell, *news) -> None:
    if tell is not None:
        try:
            tell(news)
        except Exception:  # noqa: BLE001, S110 - a display is never worth a run
            pass


def _tell_through(queue) -> None:
    """A worker's initializer: its runs tell the launcher how they go through ``queue``; a worker
    exits without waiting for news it could not send (the display can lose a line, never a run)."""
    global _TELL
    queue.cancel_join_thread()
    _TELL = queue.put


def _deliver(watch: Watcher, news: tuple) -> None:
    try:
        getattr(watch, news[0])(*news[1:])
    except Exception:  # noqa: BLE001, S110 - a display is never worth a run
        pass


def _hear(queue, watch: Watcher) -> None:
    """The launcher's thread that hands the workers' news to ``watch`` until told ``None``."""
    while (news := queue.get()) is not None:
        _deliver(watch, news)


def run_in(env: dict[str, str], cwd: str, fn, *args):
    """``fn(*args)`` under the caller's environment and folder: a forked worker has the fork server's,
    from when it started (``capacity demo --weeks`` changes CAPACITY_METRICS between runs)."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    return fn(*args)


def worker_context():
    """Workers fork from a server that has imported the heavy libraries once (``PRELOAD``); where
    there is no fork server (Windows) they are spawned and import them themselves."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def plan_ranges(
    keys: list[str], workers: int, servers: int = 0, *, servers_per_run: int
) -> list[list[str]]:
    """The batches to run as contiguous ranges, about one per worker (more where ``keys`` has gaps),
    and more, smaller ones when a range would hold over ``servers_per_run`` of the ``servers``."""
    from capacity_assets.inputs.batching import batch_index
    from capacity_assets.pipeline.jobs import ranges

    index = {k: batch_index(k) for k in keys}
    order = sorted(keys, key=index.__getitem__)
    per_run = batches_per_run(len(keys), workers, servers, servers_per_run=servers_per_run)
    return [
        [k for k in order if index[a] <= index[k] <= index[b]] for a, b in ranges(keys, per_run)
    ]


def batches_per_run(batches: int, workers: int, servers: int = 0, *, servers_per_run: int) -> int:
    """How many of ``batches`` batches (holding ``servers`` servers) one run covers: about one run per
    worker, and no run over ``servers_per_run`` (CAPACITY_SERVERS_PER_RUN) servers. A run holds its
    batches' inputs together (the champions step: daily history and every contender's results), so
    this bounds a process's memory: at 500 servers a run stays under about 2 GB."""
    per_run = max(1, math.ceil(batches / max(workers, 1)))
    if servers > servers_per_run:
        per_run = min(per_run, max(1, servers_per_run * batches // servers))
    return per_run


def useful_workers(servers: int, workers: int) -> int:
    """How many of ``workers`` processes are worth starting for ``servers`` servers."""
    return max(1, min(workers, math.ceil(servers / SERVERS_PER_WORKER)))


def run_batches(
    keys: list[str],
    workers: int,
    verbose: bool = False,
    echo=print,
    servers: int = 0,
    *,
    servers_per_run: int,
    inspection: Inspected | None = None,
    watch: Watcher | None = None,
) -> RunOutcome:
    """Run every batch in ``keys`` (holding ``servers`` servers) with ``workers`` processes, in ranges
    of at most ``servers_per_run`` servers, echoing one line per finished range; ``watch`` hears the
    plan, each range's steps and batches as they go, and each finished range.

    On Ctrl-C or SIGTERM the workers are stopped: a batch not yet published keeps its previous
    results in every table (see store.staging), finished batches stay, and the next run redoes the rest.
    ``inspection``: the whole input's, of which each run is handed its own batches' share.
    """
    outcome = RunOutcome()
    started = time.monotonic()
    if not keys:
        return outcome
    chunks = plan_ranges(keys, workers, servers, servers_per_run=servers_per_run)

    def share(chunk: list[str]) -> str:
        return inspection.share(chunk).dumps() if inspection is not None else ""

    def finished(results: list[BatchResult]) -> None:
        nonlocal done
        outcome.batches += results
        done += len(results)
        if watch is not None:
            watch.finished(results)
        echo(_line(results, done, len(keys), started))

    if watch is not None:
        per_batch = Counter(inspection.server_batch.values() if inspection is not None else [])
        watch.planned(chunks, {k: per_batch[k] for k in keys})
    workers = max(1, min(workers, len(chunks)))
    done = 0
    # a fleet cut into ranges for memory runs each range in a fresh worker, even with one worker: in
    # the command's own process what one range leaves allocated would add to the next one's peak
    if workers == 1 and (len(chunks) == 1 or servers <= servers_per_run):
        tell = (lambda news: _deliver(watch, news)) if watch is not None else None
        for chunk in chunks:
            finished(run_job("capacity_forecast", chunk, verbose, share(chunk), tell))
    else:
        ctx = worker_context()
        # more ranges than workers (a large fleet): a fresh process per range, so what a range leaves
        # allocated in a process (pandas, Arrow) never adds to the next range's peak
        options = {"max_tasks_per_child": 1} if len(chunks) > workers else {}
        news = ctx.Queue() if watch is not None else None
        if news is not None:  # the workers' runs tell their steps and batches through it
            options |= {"initializer": _tell_through, "initargs": (news,)}
            threading.Thread(target=_hear, args=(news, watch), daemon=True).start()
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, **options)
        try:
            env, cwd = dict(os.environ), os.getcwd()
            futures = {
                pool.submit(
                    run_in, env, cwd, run_job, "capacity_forecast", chunk, verbose, share(chunk)
                ): chunk
                for chunk in chunks
            }
            for fut in as_completed(futures):
                try:
                    results = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker killed mid-run
                    results = [
                        BatchResult(k, False, error=f"worker died: {e}") for k in futures[fut]
                    ]
                finished(results)
        except BaseException:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if news is not None:
                news.put(None)  # the listening thread ends after the news already sent
        pool.shutdown()
    outcome.batches.sort(key=lambda b: b.batch)
    outcome.seconds = time.monotonic() - started
    return outcome


def _line(results: list[BatchResult], done: int, n: int, started: float) -> str:
    ok = [r.batch for r in results if r.success]
    bad = [r for r in results if not r.success]
    first, last = results[0].batch, results[-1].batch
    what = first if first == last else f"{first}..{last}"
    status = (
        "ok"
        if not bad
        else (
            "FAILED"
            if not ok
            else f"{len(bad)} of {len(results)} FAILED ({', '.join(r.batch for r in bad)})"
        )
    )
    text = (
        f"[{done}/{n}] {what}: {status} in {results[0].seconds:.1f}s "
        f"(elapsed {time.monotonic() - started:.0f}s)"
    )
    if bad:
        text += "\n    " + bad[0].error.replace("\n", "\n    ")
    return text
