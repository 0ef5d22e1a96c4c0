"""Every asset check and watch of the graph, in one home.

Most rules are one pure function from a batch's frames to an AssetCheckResult, run inside the asset
that produced the frame (``check_specs``), so a check sees exactly what was written to that
partition; every such rule names the offending series in its description and metadata, so a
failing check says where to look. The freshness check looks across all batches, so it is its own
asset check with its own job.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pandas as pd

from capacity_assets.inputs.batching import batch_keys
from capacity_assets.pipeline.batches import failures
from capacity_assets.pipeline.resources import SettingsResource
from capacity_assets.schema import BATCH_SERIES_KEY as KEY
from capacity_assets.schema import series_names
from capacity_assets.store import ledger

SHOW = 10  # series named in a failing check's message
ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


def _result(
    asset: str, name: str, offending: pd.DataFrame, problem: str, severity=ERROR, **metadata
) -> dg.AssetCheckResult:
    """Passed when ``offending`` (rows naming server_id and resource) is empty."""
    names = series_names(offending, SHOW) if len(offending) else []
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=offending.empty,
        severity=severity,
        description=None if offending.empty else f"{problem}: {', '.join(names)}",
        metadata={**metadata, "series": ", ".join(names) or "none"},
    )


# --- processed_data --------------------------------------------------------------------------------


def values_in_range(processed: pd.DataFrame) -> dg.AssetCheckResult:
    bad = processed[~processed["y"].between(0, 100)]  # NaN is out of range too
    return _result(
        "processed_data",
        "values_within_0_100",
        bad,
        f"{len(bad)} values outside 0–100 or missing",
        rows_out_of_range=len(bad),
    )


def one_row_per_day(processed: pd.DataFrame) -> dg.AssetCheckResult:
    dup = processed[processed.duplicated(["server_id", "resource", "ds"], keep=False)]
    return _result(
        "processed_data",
        "one_row_per_series_per_day",
        dup,
        f"{len(dup)} duplicate series-days",
        duplicate_rows=len(dup),
    )


def batch_not_empty(processed: pd.DataFrame, batches: list[str]) -> dg.AssetCheckResult:
    present = set(
        processed["batch"].unique()
    )  # once: a per-batch rebuild cost seconds at 2,000 servers
    empty = [b for b in batches if b not in present]
    return dg.AssetCheckResult(
        asset_key="processed_data",
        check_name="batch_not_empty",
        passed=not empty,
        severity=WARN,
        description=None
        if not empty
        else f"{', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no series: "
        f"no server's id hashes to it (fewer servers than batches?) or all its "
        f"rows were invalid",
        metadata={"rows": len(processed), "empty_batches": ", ".join(empty) or "none"},
    )


PROCESSED_CHECKS = [
    dg.AssetCheckSpec(
        "values_within_0_100",
        asset="processed_data",
        blocking=True,
        description="Every daily value is within 0–100 %.",
    ),
    dg.AssetCheckSpec(
        "one_row_per_series_per_day",
        asset="processed_data",
        blocking=True,
        description="Exactly one row per server, resource and day.",
    ),
    dg.AssetCheckSpec(
        "batch_not_empty",
        asset="processed_data",
        description="The batch holds at least one series.",
    ),
]


# --- champions -------------------------------------------------------------------------------------


def champion_mape(
    champions: pd.DataFrame, warn_mape: float, error_share: float
) -> dg.AssetCheckResult:
    """WARN when any series' champion is worse than ``warn_mape``, ERROR when more than
    ``error_share`` of the batch is: one bad series is a data quirk, a quarter is a broken model.
    Unscored series (NaN) are not counted; they show up as trust 'low'."""
    mape = champions["champion_mape"].astype(float)
    over = champions[mape > warn_mape].sort_values("champion_mape", ascending=False)
    share = len(over) / len(champions) if len(champions) else 0.0
    # judged per batch, as documented: a run covering many batches must not dilute a broken one
    by_batch = (mape > warn_mape).groupby(champions["batch"]).mean()
    broken = by_batch[by_batch > error_share].sort_values(ascending=False)
    worst = "\n".join(
        f"- {r.server_id}/{r.resource}: {float(r.champion_mape):.2f}%"
        for r in over.head(SHOW).itertuples()
    )
    problem = f"{len(over)} of {len(champions)} series ({share:.0%}) have a champion MAPE above {warn_mape:g}%"
    if len(broken):
        problem += f"; more than {error_share:.0%} of batch(es) " + ", ".join(
            f"{b} ({v:.0%})" for b, v in broken.head(SHOW).items()
        )
    return _result(
        "champions",
        "champion_mape",
        over,
        problem,
        severity=ERROR if len(broken) else WARN,
        series_over=len(over),
        share_over=round(share, 3),
        batches_over_share=", ".join(map(str, broken.index)) or "none",
        worst=dg.MetadataValue.md(worst or "none"),
    )


CHAMPIONS_CHECKS = [
    dg.AssetCheckSpec(
        "champion_mape",
        asset="champions",
        description=(
            "WARN when a series' champion MAPE exceeds CAPACITY_MAPE_WARN, ERROR when more than "
            "CAPACITY_MAPE_ERROR_SHARE of the batch does. Flags only: every series stays in the golden record."
        ),
    ),
]


# --- forecasts -------------------------------------------------------------------------------------


def forecast_horizon(forecasts: pd.DataFrame, horizon_days: int) -> dg.AssetCheckResult:
    g = forecasts.groupby(KEY)["ds"]
    stats = pd.DataFrame(
        {"n": g.size(), "unique": g.nunique(), "span": (g.max() - g.min()).dt.days + 1}
    ).reset_index()
    bad = stats[
        (stats["n"] != horizon_days)
        | (stats["unique"] != horizon_days)
        | (stats["span"] != horizon_days)
    ]
    return _result(
        "forecasts",
        "forecast_horizon",
        bad,
        f"{len(bad)} series without exactly {horizon_days} consecutive days",
        days_found=str(sorted(set(bad["n"].astype(int).tolist()))[:SHOW]),
    )


def forecast_bounds_ordered(forecasts: pd.DataFrame, tol: float = 1e-9) -> dg.AssetCheckResult:
    f = forecasts
    ok = (
        ((f["yhat_lower"] <= f["yhat"] + tol) & (f["yhat"] <= f["yhat_upper"] + tol))
        .fillna(False)
        .astype(bool)
    )
    return _result(
        "forecasts",
        "forecast_bounds_ordered",
        f.loc[~ok, KEY].drop_duplicates(),
        f"{int((~ok).sum())} rows break yhat_lower <= yhat <= yhat_upper or are NaN",
        bad_rows=int((~ok).sum()),
    )


def every_series_accounted(
    forecasts: pd.DataFrame, processed: pd.DataFrame, skipped: pd.DataFrame
) -> dg.AssetCheckResult:
    """Batches that failed in this run are left out: they are not published, and the run fails on them."""
    parts = [df[KEY].astype(str) for df in (forecasts, skipped) if len(df)]
    have = pd.concat(parts).drop_duplicates() if parts else pd.DataFrame(columns=KEY, dtype=str)
    failed = set(failures(forecasts))
    want = processed.loc[~processed["batch"].isin(failed), KEY].astype(str).drop_duplicates()
    lost = want.merge(have, on=KEY, how="left", indicator=True)
    lost = lost[lost["_merge"] == "left_only"]
    return _result(
        "forecasts",
        "every_series_accounted",
        lost,
        f"{len(lost)} processed series neither forecast nor in skipped_series",
    )


FORECASTS_CHECKS = [
    dg.AssetCheckSpec(
        "forecast_horizon",
        asset="forecasts",
        description="Every series has exactly the horizon's days.",
    ),
    dg.AssetCheckSpec(
        "forecast_bounds_ordered",
        asset="forecasts",
        description="yhat_lower <= yhat <= yhat_upper.",
    ),
    dg.AssetCheckSpec(
        "every_series_accounted",
        asset="forecasts",
        description="Every series of processed_data is forecast or listed in skipped_series.",
    ),
]


# --- capacity_plan ---------------------------------------------------------------------------------


def every_series_planned(plan: pd.DataFrame, forecasts: pd.DataFrame) -> dg.AssetCheckResult:
    """Every forecast series has exactly one plan row, and no plan row lacks a forecast."""
    want = forecasts[KEY].astype(str).drop_duplicates().assign(_want=True)
    counts = plan[KEY].astype(str).groupby(KEY).size().rename("n").reset_index()
    both = want.merge(counts, on=KEY, how="outer")
    bad = both[(both["n"].fillna(0) != 1) | both["_want"].isna()]
    return _result(
        "capacity_plan",
        "every_series_planned",
        bad,
        f"{len(bad)} series without exactly one plan row (missing, duplicated or without a forecast)",
    )


def add_has_needed_by(plan: pd.DataFrame) -> dg.AssetCheckResult:
    bad = plan[(plan["action"] == "add") & plan["needed_by"].isna()]
    return _result(
        "capacity_plan", "add_has_needed_by", bad, f"{len(bad)} 'add' rows without needed_by"
    )


def low_trust_reviewed(plan: pd.DataFrame) -> dg.AssetCheckResult:
    low = ~plan["trust"].astype("string").isin(["high", "medium"]).fillna(False).astype(bool)
    bad = plan[
        plan["action"].isin(["add", "reclaim"]) & low & ~plan["review"].fillna(False).astype(bool)
    ]
    return _result(
        "capacity_plan",
        "low_trust_reviewed",
        bad,
        f"{len(bad)} low-trust 'add'/'reclaim' rows not marked review",
    )


PLAN_CHECKS = [
    dg.AssetCheckSpec(
        "every_series_planned",
        asset="capacity_plan",
        description="Every forecast series has one plan row.",
    ),
    dg.AssetCheckSpec(
        "add_has_needed_by",
        asset="capacity_plan",
        description="Every 'add' row has a needed_by date.",
    ),
    dg.AssetCheckSpec(
        "low_trust_reviewed",
        asset="capacity_plan",
        description="Every low-trust 'add' or 'reclaim' row is marked for review.",
    ),
]


# --- forecast_accuracy -----------------------------------------------------------------------------

DRIFT_SPEC = dg.AssetCheckSpec(
    "batch_drift",
    asset="forecast_accuracy",
    description=(
        "WARN when a batch's realised MAPE over its last 4 scored vintages is worse than its backtest MAPE by more "
        "than CAPACITY_DRIFT_FACTOR: the models are drifting."
    ),
)

# the weekly schedule refreshes everything on Mondays; a week and a day later it is overdue
FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(days=8), warn_window=timedelta(days=7)
)


# --- batch_ledger, across every batch: a check of its own (capacity_freshness) ---------------------


@dg.asset_check(
    asset="batch_ledger",
    name="every_batch_fresh",
    description=f"Every batch was published within {ledger.STALE_AFTER_DAYS} days; fails naming the "
    "batches that are stale or were never published, so one fresh batch never makes "
    "the whole golden record look fresh.",
)
def every_batch_fresh(settings: SettingsResource) -> dg.AssetCheckResult:
    # the published ledger, every batch of it: handed over as an input, a UI backfill's run gave the
    # check only its own range's rows, not yet published, and every batch looked "never published"
    cfg = settings.get()
    keys = batch_keys(cfg.batches)
    batch_ledger = ledger.read(cfg.database)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    stale = ledger.stale(batch_ledger, keys, now)
    oldest = pd.to_datetime(batch_ledger["published_at"]).min() if len(batch_ledger) else None
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if not stale
        else f"{len(stale)} of {len(keys)} batches are not fresh: "
        + "; ".join(f"{b}: {why}" for b, why in list(stale.items())[:10]),
        metadata={
            "stale_batches": ", ".join(stale) or "none",
            "oldest_published_at": str(oldest)
            if oldest is not None and not pd.isna(oldest)
            else "none",
        },
    )
