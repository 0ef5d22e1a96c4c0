"""Several batches in one run, each computed exactly as it would be alone, one failure kept to itself.

A Dagster run covers a range of batches (the assets' backfill policy, `capacity run`'s ranges), so
the per-run cost is paid once per worker. Every asset loops over the run's batches with
``each_batch``: the inputs are split by their ``batch`` column, the pure core computes one batch at
a time, and a batch whose computation raises is logged, left out of the output and named in the
frame's ``attrs[FAILED]``. The IO manager does not stage a failed batch (so it can never publish a
partial batch) and hands the failure on to the next asset's inputs; ``batch_ledger`` publishes the
others and then fails the run naming what failed, so re-running only those is enough.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import dagster as dg
import pandas as pd

from capacity_assets.schema import empty

FAILED = "capacity_failed_batches"  # DataFrame.attrs key: {batch: why it failed}
# told (step, batch, batches done, of, output) as each batch starts (output None) and once with the
# step's output when all are done: `capacity run`'s progress display (``runner``) listens here
WATCHERS: list[Callable[[str, str | None, int, int, pd.DataFrame | None], object]] = []
PROGRESS_BATCH_S, PROGRESS_EVERY_S = (
    2.0,
    15.0,
)  # a line for a batch that took this long, or this long since the last


def failures(*frames: pd.DataFrame) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in frames:
        if isinstance(f, pd.DataFrame):
            out.update(f.attrs.get(FAILED, {}))
    return out


def mark(frame: pd.DataFrame, failed: dict[str, str]) -> pd.DataFrame:
    frame.attrs[FAILED] = dict(failed)
    return frame


def _split(frame: pd.DataFrame) -> dict[str, pd.DataFrame] | None:
    """{batch: rows} for a batch table; None for one that is not split by batch (the hierarchy)."""
    if not isinstance(frame, pd.DataFrame) or "batch" not in frame.columns:
        return None
    return {
        str(b): g.reset_index(drop=True)
        for b, g in frame.groupby("batch", sort=False, observed=True)
    }


def each_batch(
    context: dg.AssetExecutionContext,
    what: str,
    inputs: dict[str, pd.DataFrame],
    compute: Callable[..., pd.DataFrame],
    columns: dict[str, str],
) -> pd.DataFrame:
    """``compute(batch, **inputs_of_that_batch)`` for every batch of the run, concatenated."""
    keys = context.partition_keys
    failed = {b: why for b, why in failures(*inputs.values()).items() if b in keys}
    split = {name: _split(frame) for name, frame in inputs.items()}
    parts, started = [], time.monotonic()
    last = started
    for i, batch in enumerate(keys, 1):
        for watch in WATCHERS:
            watch(what, batch, i - 1, len(keys), None)
        if batch in failed:
            context.log.warning(
                f"{batch}: {what} skipped, an earlier step failed for it ({failed[batch]})"
            )
            continue
        args = {
            name: (frame if split[name] is None else split[name].get(batch, frame.iloc[0:0]))
            for name, frame in inputs.items()
        }
        t0 = time.monotonic()
        try:
            part = compute(batch, **args)
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not cost the others theirs
            failed[batch] = f"{what}: {type(exc).__name__}: {exc}"
            context.log.error(
                f"{batch}: {what} failed; the batch will not be published: "
                f"{''.join(traceback.format_exception(exc, limit=-4))}"
            )
            continue
        parts.append(part)
        now = time.monotonic()
        # progress on long work only: every line is a write to Dagster's event log
        if (
            len(keys) > 1
            and i < len(keys)
            and (now - t0 >= PROGRESS_BATCH_S or now - last >= PROGRESS_EVERY_S)
        ):
            last = now
            context.log.info(
                f"{batch}: {what}: {len(part):,} rows in {now - t0:.1f}s "
                f"({i}/{len(keys)} batches, {now - started:.0f}s)"
            )
    out = pd.concat(parts, ignore_index=True) if parts else empty(columns)
    for watch in WATCHERS:
        watch(what, None, len(keys), len(keys), out)
    if len(keys) > 1:
        context.log.info(
            f"{what}: {len(parts)}/{len(keys)} batches, {len(out):,} rows in "
            f"{time.monotonic() - started:.1f}s"
            + (f"; failed: {', '.join(sorted(failed))}" if failed else "")
        )
    return mark(out, failed)
