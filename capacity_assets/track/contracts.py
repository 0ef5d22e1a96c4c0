"""What the track record's pure code shares beyond the table contracts (those are in schema.py)."""

from __future__ import annotations

from capacity_assets.schema import (
    FORECAST_ACCURACY,
    FORECAST_HISTORY,
    RISK_CALL_OUTCOMES,
    RISK_HISTORY,
    RISK_LIFECYCLE,
    RISK_RESOLVED,
)

# the table contracts the track record's code reads from here, beside its own shapes
__all__ = [
    "FORECAST_ACCURACY",
    "FORECAST_HISTORY",
    "RISK_CALL_OUTCOMES",
    "RISK_HISTORY",
    "RISK_LIFECYCLE",
    "RISK_RESOLVED",
    "HORIZON_BUCKETS",
    "RISK_CALL_SCORES",
    "RISK_EXCEPTIONS_LIFECYCLE",
    "REASON_FELL",
    "REASON_LEFT",
    "REASON_THRESHOLD",
]

HORIZON_BUCKETS = ("1-7", "8-30", "31-90", "91-180", "all")


# risk_call_scores(): one row per group (the `by` columns first, then these)
RISK_CALL_SCORES = {
    "series": "int64",
    "tp": "int64",
    "fp": "int64",
    "fn": "int64",
    "precision": "float64",
    "recall": "float64",
    "final": "bool",
}

# risk_exceptions gains these two after `severity`, before the extra hierarchy columns
RISK_EXCEPTIONS_LIFECYCLE = RISK_LIFECYCLE


# reasons in risk_resolved
REASON_FELL = "forecast fell"
REASON_LEFT = "left the fleet"
REASON_THRESHOLD = "threshold changed"
