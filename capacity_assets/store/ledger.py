"""The batch ledger: one row per batch saying what its published results were made from.

The row is a table of the batch like any other, so it is published in the same transaction as the
batch's tables (``store.staging``): it can never claim a publication that did not happen, nor miss
one that did. Skipping unchanged batches, freshness and the settings a result was made with are all
read from here, whoever ran the batch (`capacity run`, a UI backfill, a schedule).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from capacity_assets.schema import BATCH_LEDGER, conform, quote_ident
from capacity_assets.store.queries import query, tables

TABLE = "batch_ledger"
STALE_AFTER_DAYS = (
    8  # the weekly schedule refreshes every batch; a week and a day later it is overdue
)


def hierarchy_version(hierarchy: pd.DataFrame) -> str:
    """Content hash of the hierarchy a batch's owners came from (row and column order ignored)."""
    if hierarchy is None or hierarchy.empty:
        return "none"
    frame = hierarchy.reindex(sorted(hierarchy.columns), axis=1).astype("string").fillna("")
    rows = sorted(map(tuple, frame.to_numpy().tolist()))
    return hashlib.sha256(repr((list(frame.columns), rows)).encode()).hexdigest()[:16]


def ledger_row(
    batch: str,
    run_id: str,
    fingerprint: str,
    forecasts: pd.DataFrame,
    settings: dict,
    code_version: str,
    hierarchy: pd.DataFrame,
    published_at: pd.Timestamp,
) -> pd.DataFrame:
    series = (
        int(forecasts[["server_id", "resource"]].drop_duplicates().shape[0])
        if len(forecasts)
        else 0
    )
    row = {
        "batch": batch,
        "run_id": run_id,
        "fingerprint": fingerprint,
        "published_at": published_at,
        "series": series,
        "rows": len(forecasts),
        "code_version": code_version,
        "settings": json.dumps(settings, sort_keys=True),
        "hierarchy_version": hierarchy_version(hierarchy),
    }
    return conform(pd.DataFrame([row]), BATCH_LEDGER)


def read(db: str) -> pd.DataFrame:
    """The ledger as stored, one row per published batch (empty before the first publication)."""
    if TABLE not in tables(db):
        return conform(pd.DataFrame(columns=list(BATCH_LEDGER)), BATCH_LEDGER)
    return query(db, f"select * from main.{quote_ident(TABLE)} order by batch")


def unchanged(ledger: pd.DataFrame, fingerprints: dict[str, str]) -> set[str]:
    """Batches whose published results were made from exactly the inputs, settings and code they have now."""
    published = dict(zip(ledger["batch"], ledger["fingerprint"]))
    return {b for b, fp in fingerprints.items() if published.get(b) == fp}


def stale(
    ledger: pd.DataFrame, keys: list[str], now: pd.Timestamp, after_days: float = STALE_AFTER_DAYS
) -> dict[str, str]:
    """batch -> why it is not fresh: never published, or published too long ago."""
    published = dict(zip(ledger["batch"], pd.to_datetime(ledger["published_at"])))
    out = {}
    for key in keys:
        at = published.get(key)
        if at is None or pd.isna(at):
            out[key] = "never published"
        elif (now - at) > pd.Timedelta(days=after_days):
            out[key] = (
                f"published {(now - at) / pd.Timedelta(days=1):.0f} days ago ({at:%Y-%m-%d %H:%M} UTC)"
            )
    return out


def run_settings(ledger: pd.DataFrame) -> dict:
    """The result settings the published batches were made with: {name: value} when every batch
    agrees, {name: [values...]} where they differ (a setting changed and some batches are older)."""
    values: dict[str, set] = {}
    for text in ledger["settings"].dropna():
        for k, v in json.loads(text).items():
            values.setdefault(k, set()).add(json.dumps(v))
    return {
        k: json.loads(next(iter(v))) if len(v) == 1 else sorted(json.loads(x) for x in v)
        for k, v in values.items()
    }
