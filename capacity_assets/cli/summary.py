"""The end-of-run summary a planner reads: what was forecast, who won, how good, what is at risk."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from capacity_assets.inputs.batching import batch_keys
from capacity_assets.store import ledger
from capacity_assets.store.queries import query, tables


@dataclass
class Summary:
    text: str
    series_forecast: int


def run_summary(settings, outcome) -> Summary:
    db = settings.database
    have = tables(db)
    # figures are for the whole database: batches not run now keep their last published results
    ok = [b.batch for b in outcome.batches if b.success]
    lines = [
        f"\nSummary: {len(ok)}/{len(outcome.batches)} batches run and succeeded in {outcome.seconds:.0f}s "
        f"({settings.database})"
        if outcome.batches
        else f"\nSummary: no batch needed running ({settings.database})"
    ]
    if outcome.unchanged:
        lines.append(
            f"  unchanged, not re-run: {len(outcome.unchanged)} batches ({', '.join(outcome.unchanged[:5])}"
            f"{', ...' if len(outcome.unchanged) > 5 else ''})"
        )
    series = 0
    if ledger.TABLE in have:  # the settings the published results were made with, not this shell's
        book = ledger.read(db)
        used = ledger.run_settings(book)
        settings = dataclasses.replace(
            settings,
            **{k: v for k, v in used.items() if hasattr(settings, k) and not isinstance(v, list)},
        )
        mixed = {k: v for k, v in used.items() if isinstance(v, list)}
        if mixed:
            lines.append(
                "  batches were computed with different settings: "
                + "; ".join(f"{k} {v}" for k, v in mixed.items())
            )
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        stale = ledger.stale(book, batch_keys(settings.batches), now)
        if len(book):
            oldest = book.sort_values("published_at").iloc[0]
            lines.append(
                f"  oldest batch: {oldest['batch']}, published {pd.Timestamp(oldest['published_at']):%Y-%m-%d %H:%M} UTC"
            )
        if stale:
            old = any("never" not in why for why in stale.values())  # published once, not since
            lines.append(
                f"  NOT FRESH: {len(stale)} batch(es): "
                + "; ".join(f"{b} {why}" for b, why in list(stale.items())[:5])
                + (
                    " (unchanged input is not re-run: `capacity run --force` re-publishes it; or check that "
                    "the export is still being updated)"
                    if old
                    else ""
                )
            )
    if "processed_data" in have:
        n = query(
            db,
            "select count(distinct (server_id, resource)) as n, count(distinct server_id) as s from processed_data",
        ).iloc[0]
        lines.append(f"  series processed: {int(n['n'])} on {int(n['s'])} servers")
    if "skipped_series" in have:
        k = int(query(db, "select count(*) as n from skipped_series").iloc[0]["n"])
        if k:
            lines.append(
                f"  series skipped (too short to forecast, or no recent data; see table skipped_series): {k}"
            )
    if "champions" in have and int(query(db, "select count(*) as n from champions").iloc[0]["n"]):
        c = query(db, "select champion, count(*) as n from champions group by 1 order by 2 desc")
        series = int(c["n"].sum())
        med = float(query(db, "select median(champion_mape) as m from champions").iloc[0]["m"] or 0)
        wins = ", ".join(
            f"{r.champion} {int(r.n)} ({r.n / max(series, 1):.0%})" for r in c.itertuples()
        )
        lines.append(f"  series forecast: {series}; wins: {wins}; median champion MAPE {med:.1f}%")
        flagged = int(
            query(
                db,
                "select count(*) as n from champions where champion_mape > ?",
                [settings.mape_warn],
            ).iloc[0]["n"]
        )
        low = int(query(db, "select count(*) as n from champions where trust = 'low'").iloc[0]["n"])
        lines.append(
            f"  series with champion MAPE above {settings.mape_warn:g}% (bad-MAPE check): {flagged}; "
            f"low trust (backtest error could cross the threshold): {low}"
        )
    if "risk_exceptions" in have:
        r = query(db, "select severity, count(*) as n from risk_exceptions group by 1 order by 1")
        total = int(r["n"].sum())
        sev = ", ".join(f"{x.severity} {int(x.n)}" for x in r.itertuples()) or "none"
        lines.append(
            f"  at risk within {settings.risk_days} days (upper bound >= {_thresholds(db, settings)}): "
            f"{total} series ({sev})"
        )
        d = query(
            db,
            """select department, count(*) filter (where severity = 'critical') as critical,
                                count(*) filter (where severity = 'warning') as warning
                         from risk_exceptions group by 1 order by critical desc, warning desc, department limit 10""",
        )
        for x in d.itertuples():
            lines.append(
                f"    {x.department}: {int(x.critical)} critical, {int(x.warning)} warning"
            )
        lines.append(
            "  department lists: capacity report --out reports/   dashboard: capacity dashboard"
        )
    return Summary("\n".join(lines), series)


def _thresholds(db: str, settings) -> str:
    """The thresholds the series were judged against: CAPACITY_THRESHOLD, the per-resource levels
    that differ from it, and how many at-risk series had a level of their own from the hierarchy."""
    overrides = {
        r: v
        for r, v in settings.threshold_per_resource.items()
        if v is not None and v != settings.threshold
    }
    text = f"{settings.threshold:g}%" + "".join(f", {r} {v:g}%" for r, v in overrides.items())
    t = query(db, "select resource, threshold from risk_exceptions")
    expected = t["resource"].map(lambda r: overrides.get(r, settings.threshold))
    own = int((t["threshold"].astype(float) - expected.astype(float)).abs().gt(1e-9).sum())
    return text + (f"; {own} at-risk series at their server's own level" if own else "")
