"""Calibrating forecast bounds on the backtest, shared by every engine.

A model's own interval is only as honest as its assumptions (Prophet's assumes i.i.d. noise around a
trend that keeps its historical flexibility; a tree ensemble has none). The backtest is a real
out-of-sample test made just before the future forecast, so it is the calibration set of a
split-conformal scaling: scores are the backtest errors in units of the model's own half-width, and
the future half-widths are multiplied by the ``interval``-quantile of those scores. The shape of the
bounds (how they widen with the horizon) stays the model's, corrected by horizon as below.

One 4-month backtest from one origin is a thin basis for a per-series quantile: its ~120 errors are
strongly autocorrelated (a few independent looks at the model), a calm backtest under-states a
heavy-tailed series, and the tournament's champion is, by selection, the contender whose backtest
went best (its own scale is the most optimistic). So the factor borrows from every series of the
same resource in the call, each a backtest from its own origin:

* ``k = k_series^(1 - SHRINK) * k_pool^SHRINK``: the series' own conformal quantile, shrunk halfway
  (in logs) to the pooled quantile of the scores of every series of that resource (of all series
  when a resource has fewer than ``POOL_MIN_SERIES``);
* times a horizon correction from the pool: the quantile of the pooled scores at backtest horizons
  1-30, 31-90 and 91+ days, divided by the pooled quantile, applied to the future days at the same
  horizons (beyond the backtest, the last block's). Models whose own bands widen too fast or too
  slowly with the horizon get near-term and far-term bands that cover alike.

A model whose backtest bounds covered 80 % across the fleet keeps them (k about 1); one that was
twice too narrow gets them doubled. Held-out coverage per family and resource is in
``benchmarks/README.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import on_days_of
from capacity_assets.schema import SERIES_KEY

K_MIN, K_MAX = 0.2, 10.0
SHRINK = 0.5  # weight of the pooled factor, in logs
POOL_MIN_SERIES = 8  # fewer series of a resource in the call: pool over every resource
HORIZON_BLOCKS = (30, 90)  # backtest horizons (days) that split the pooled horizon correction


def _conformal_quantile(score: np.ndarray, interval: float) -> float:
    n = len(score)
    if n == 0:
        return float("nan")
    return float(np.quantile(score, min(1.0, np.ceil((n + 1) * interval) / n)))


def _conformal_quantiles(codes: np.ndarray, score: np.ndarray, interval: float) -> np.ndarray:
    """``_conformal_quantile`` of every group of ``score`` (group ``codes`` 0..G-1) at once.

    The same arithmetic as ``np.quantile``'s default (linear) method on each group, so the same
    values, without a numpy call per series (about 0.2 ms each, 400 series a batch and engine)."""
    counts = np.bincount(codes)
    order = np.lexsort((score, codes))
    s = score[order]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n = counts.astype(float)
    q = np.minimum(1.0, np.ceil((n + 1) * interval) / n)
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's _compute_virtual_index, alpha = beta = 1
    prev = np.floor(virtual)
    gamma = virtual - prev
    last = virtual >= n - 1
    prev = np.where(last, n - 1, np.maximum(prev, 0)).astype(np.intp)
    nxt = np.where(last, n - 1, np.maximum(prev + 1, 0)).astype(np.intp)
    a, b = s[start + prev], s[start + nxt]
    diff = b - a
    out = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    has_nan = np.bincount(codes, weights=np.isnan(score), minlength=len(counts)) > 0
    return np.where(has_nan, np.nan, out)


def _block(h: np.ndarray) -> np.ndarray:
    """Horizon block (0, 1, 2, ...) of horizons ``h`` in days (1 = first day)."""
    return np.searchsorted(np.asarray(HORIZON_BLOCKS), h, side="left")


def _horizon(frame: pd.DataFrame) -> np.ndarray:
    """Days after the fit's last day (``origin``); without one, since the series' first row in
    ``frame``, + 1 (the same for a backtest or a future, whose first day follows the origin)."""
    if "origin" in frame.columns and frame["origin"].notna().all():
        return (pd.to_datetime(frame["ds"]) - pd.to_datetime(frame["origin"])).dt.days.to_numpy()
    first = frame.groupby(SERIES_KEY, sort=False)["ds"].transform("min")
    return ((frame["ds"] - first).dt.days + 1).to_numpy()


def factors(backtest: pd.DataFrame, actuals: pd.DataFrame, interval: float) -> tuple[dict, dict]:
    """(``{(server_id, resource): k}``, ``{resource: {block: horizon correction}}``) from backtest rows."""
    bt = backtest.drop(columns=["y"], errors="ignore").merge(
        on_days_of(actuals, backtest)[SERIES_KEY + ["ds", "y"]], on=SERIES_KEY + ["ds"]
    )
    bt = bt[np.isfinite(bt["y"].to_numpy(float)) & np.isfinite(bt["yhat"].to_numpy(float))]
    if bt.empty:
        return {}, {}
    y, yhat = bt["y"].to_numpy(float), bt["yhat"].to_numpy(float)
    err = y - yhat
    half = np.where(
        err >= 0, bt["yhat_upper"].to_numpy(float) - yhat, yhat - bt["yhat_lower"].to_numpy(float)
    )
    # the series' keys factorised once; every per-series and per-resource step works on the codes
    codes, keys = pd.MultiIndex.from_frame(bt[SERIES_KEY]).factorize()
    rows = np.bincount(codes)
    mean_abs = (np.bincount(codes, weights=np.abs(err)) / rows)[codes]
    floor = np.maximum(1e-6, 0.05 * mean_abs)  # degenerate zero-width bounds
    score = np.abs(err) / np.maximum(half, floor)
    if "origin" in bt.columns and bt["origin"].notna().all():  # several origins per series
        block = _block(_horizon(bt))
    else:
        days = bt["ds"].to_numpy("datetime64[D]").astype(np.int64)
        first = np.full(len(rows), np.iinfo(np.int64).max)
        np.minimum.at(first, codes, days)
        block = _block(days - first[codes] + 1)  # _horizon's days since the series' first row, + 1
    own_q = _conformal_quantiles(codes, score, interval)
    key_resource = np.asarray(keys.get_level_values(1), dtype=object)
    row_resource = key_resource[codes]
    n_series = pd.Series(key_resource).value_counts()
    pools: dict = {}
    for resource in n_series.index:
        part = row_resource == resource if n_series[resource] >= POOL_MIN_SERIES else slice(None)
        sc, bl = score[part], block[part]
        k_pool = _conformal_quantile(sc, interval)
        ratio = (
            {int(b): _conformal_quantile(sc[bl == b], interval) / k_pool for b in np.unique(bl)}
            if k_pool > 0
            else {}
        )
        pools[resource] = (k_pool, ratio)
    k_pool = np.array([pools[r][0] for r in keys.get_level_values(1)], dtype=float)
    mixed = np.exp(
        (1 - SHRINK) * np.log(np.maximum(own_q, 1e-9)) + SHRINK * np.log(np.maximum(k_pool, 1e-9))
    )
    k = dict(zip(keys.tolist(), np.clip(mixed, K_MIN, K_MAX).tolist()))
    return k, {r: ratio for r, (_, ratio) in pools.items()}


def _lookup(values: dict, keys: pd.MultiIndex) -> tuple[np.ndarray, np.ndarray]:
    """(``values[key]`` or 1.0 per key, whether the key is in ``values``): one vectorised dict lookup."""
    if not values:
        return np.ones(len(keys)), np.zeros(len(keys), bool)
    table = pd.Series(values, dtype=float)
    pos = table.index.get_indexer(keys)
    found = pos >= 0
    return np.where(found, table.to_numpy()[pos], 1.0), found


def calibrate(
    future: pd.DataFrame, backtest: pd.DataFrame, actuals: pd.DataFrame, interval: float
) -> pd.DataFrame:
    """Rescale ``future`` bounds per series and horizon by the backtest's conformal factors.

    ``backtest`` and ``future`` hold ENGINE_RESULTS rows of the same series (usually a batch),
    ``actuals`` server_id, resource, ds, y. Series without scored backtest rows keep their bounds.
    """
    if future.empty:
        return future
    return rescale(future, *factors(backtest, actuals, interval))


def rescale(future: pd.DataFrame, k: dict, ratios: dict) -> pd.DataFrame:
    """``future``'s bounds scaled by ``factors``' per-series ``k`` and per-resource horizon
    corrections ``ratios``; series without a factor keep their bounds."""
    if future.empty:
        return future
    rows = pd.MultiIndex.from_arrays(
        [future["server_id"].astype(object), future["resource"].astype(object)]
    )
    kk, known = _lookup(k, rows)
    # a block the backtest did not reach takes the farthest one it did
    table = {
        (r, b): ratio.get(b, ratio[max(ratio)])
        for r, ratio in ratios.items()
        if ratio
        for b in range(len(HORIZON_BLOCKS) + 1)
    }
    block = _block(_horizon(future))
    corr, _ = _lookup(
        table,
        pd.MultiIndex.from_arrays(
            [future["resource"].astype(object).to_numpy(), block.astype(int)]
        ),
    )
    corr = np.where(known, corr, 1.0)
    kk = np.clip(kk * corr, K_MIN, K_MAX)
    out = future.copy()
    out["yhat_lower"] = out["yhat"] - kk * (out["yhat"] - out["yhat_lower"])
    out["yhat_upper"] = out["yhat"] + kk * (out["yhat_upper"] - out["yhat"])
    return out


def clip_utilisation(df: pd.DataFrame) -> pd.DataFrame:
    """Clip to 0–100 after the bounds are computed, keeping lower <= yhat <= upper."""
    out = df.copy()
    for c in ("yhat", "yhat_lower", "yhat_upper"):
        out[c] = out[c].clip(0.0, 100.0)
    out["yhat_lower"] = np.minimum(out["yhat_lower"], out["yhat"])
    out["yhat_upper"] = np.maximum(out["yhat_upper"], out["yhat"])
    return out
