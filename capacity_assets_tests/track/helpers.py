"""Tiny hand-made golden records and actuals for the tracking tests."""

import numpy as np
import pandas as pd

from capacity_assets import schema


def day(s: str) -> pd.Timestamp:
    return pd.Timestamp(s)


def golden(
    batch, server, resource, start, yhat, lower, upper, run_id="r1", model="prophet", days=10
):
    """A golden-record series (schema.FORECASTS) of ``days`` days from ``start``; scalars or arrays."""
    ds = pd.date_range(day(start), periods=days)
    arr = lambda v: np.resize(np.asarray(v, float), days)  # noqa: E731
    rows = pd.DataFrame(
        {
            "batch": batch,
            "server_id": server,
            "resource": resource,
            "ds": ds,
            "yhat": arr(yhat),
            "yhat_lower": arr(lower),
            "yhat_upper": arr(upper),
            "model": model,
            "champion": "prophet",
            "champion_mape": 8.0,
            "trust": "high",
            "run_id": run_id,
            "generated_at": pd.Timestamp("2026-01-01 06:00"),
        }
    )
    rows = rows.assign(
        demand=rows["yhat"], demand_upper=rows["yhat_upper"]
    )  # unclipped = clipped here
    return schema.conform(rows, schema.FORECASTS)


def actuals(batch, server, resource, start, ys, filled=()):
    """processed_data rows from ``start``, one a day; ``filled`` lists gap-filled dates."""
    ds = pd.date_range(day(start), periods=len(ys))
    return schema.conform(
        pd.DataFrame(
            {
                "batch": batch,
                "server_id": server,
                "resource": resource,
                "ds": ds,
                "y": np.asarray(ys, float),
                "filled": [d in {day(f) for f in filled} for d in ds],
            }
        ),
        schema.PROCESSED_DATA,
    )


def cat(*frames):
    return pd.concat(frames, ignore_index=True)


def risk_row(
    batch,
    server,
    resource="cpu",
    severity="warning",
    department="Pay",
    app_manager="ann",
    threshold=95.0,
    first_breach="2026-01-03",
):
    """One risk_exceptions row (schema.RISK_EXCEPTIONS)."""
    return schema.conform(
        pd.DataFrame(
            [
                {
                    "batch": batch,
                    "server_id": server,
                    "resource": resource,
                    "department": department,
                    "app_manager": app_manager,
                    "first_breach_date": day(first_breach),
                    "days_to_breach": 3,
                    "peak_upper": 97.0,
                    "peak_yhat": 90.0,
                    "model": "prophet",
                    "champion_mape": 8.0,
                    "trust": "high",
                    "severity": severity,
                    "threshold": threshold,
                }
            ]
        ),
        schema.RISK_EXCEPTIONS,
    )


def no_risk():
    return schema.empty(schema.RISK_EXCEPTIONS)


def series_from(batch, server, resource, start, end, base, overrides=None, filled=()):
    """Daily actuals ``start``..``end`` at ``base`` with {date: value} overrides."""
    ds = pd.date_range(day(start), day(end))
    ys = [float((overrides or {}).get(d.strftime("%Y-%m-%d"), base)) for d in ds]
    return actuals(batch, server, resource, start, ys, filled=filled)
