"""Trust for capacity: low when the backtest error could move the series across the threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets import schema
from capacity_assets.forecasting import tournament as t
from capacity_assets.forecasting.engines.base import with_origin

END = pd.Timestamp("2026-10-31")


def test_rule_on_hand_made_numbers():
    # a 12 % series with MAPE 30 (a 3.6-point error) far from 95: not low
    assert t.capacity_trust(30.0, 3.6, 12.0, 95.0) == "medium"
    # a 90 % series with a 6-point error: it could cross 95, low
    assert t.capacity_trust(6.7, 6.0, 90.0, 95.0) == "low"
    # the same series with a 2-point error: the call stands
    assert t.capacity_trust(2.2, 2.0, 90.0, 95.0) == "high"
    # already forecast far beyond the threshold: an error cannot bring it back
    assert t.capacity_trust(8.0, 6.0, 120.0, 95.0) == "high"
    # unscored
    assert t.capacity_trust(np.nan, np.nan, 50.0, 95.0) == "low"


def _results(server, level, err, model="prophet"):
    bt = pd.date_range(end=END, periods=30)
    fut = pd.date_range(END + pd.Timedelta(days=1), periods=100)
    rows = pd.concat(
        [
            pd.DataFrame(
                {"ds": bt, "yhat": level + err * np.resize([1.0, -1.0], 30), "split": "backtest"}
            ),
            pd.DataFrame({"ds": fut, "yhat": np.full(100, float(level)), "split": "future"}),
        ],
        ignore_index=True,
    )
    rows = rows.assign(
        batch="b",
        server_id=server,
        resource="cpu",
        model=model,
        yhat_lower=rows["yhat"] - 1,
        yhat_upper=rows["yhat"] + 1,
        demand=rows["yhat"],
        demand_upper=rows["yhat"] + 1,
    )
    act = pd.DataFrame(
        {
            "batch": "b",
            "server_id": server,
            "resource": "cpu",
            "ds": bt,
            "y": float(level),
            "filled": False,
        }
    )
    return schema.conform(with_origin(rows), schema.MODEL_RESULTS), act


def test_champions_with_a_threshold():
    idle, a1 = _results("idle", 12, 3.6)  # MAPE 30, far from 95
    busy, a2 = _results("busy", 90, 6.0)  # a 6-point error at 90 %
    res = {"prophet": pd.concat([idle, busy], ignore_index=True)}
    act = pd.concat([a1, a2], ignore_index=True)
    old = t.champions(res, act).set_index("server_id")["trust"]
    assert old.to_dict() == {"busy": "high", "idle": "low"}  # the MAPE rule, unchanged by default
    new = t.champions(res, act, threshold=95.0).set_index("server_id")["trust"]
    assert new.to_dict() == {"busy": "low", "idle": "medium"}
    # per-series thresholds: busy judged against 99 is far enough
    per = pd.Series({("busy", "cpu"): 99.0, ("idle", "cpu"): 95.0})
    assert (
        t.champions(res, act, threshold=per).set_index("server_id").loc["busy", "trust"] == "high"
    )
    frame = pd.DataFrame(
        {"server_id": ["busy", "idle"], "resource": "cpu", "threshold": [99.0, 95.0]}
    )
    assert (
        t.champions(res, act, threshold=frame).set_index("server_id").loc["busy", "trust"] == "high"
    )
