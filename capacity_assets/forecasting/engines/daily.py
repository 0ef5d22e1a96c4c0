"""Every series of a batch on one regular daily grid, for the engines that work on the whole batch.

Why: ETS and the challenger need a regular series (a value every day), and building one pandas
frame per series (group, sort, reindex, interpolate, and a frame of rows out) cost about a fifth
of ETS's CPU and more than the challenger's trees (benchmarks/README.md, issue 25). Here the
batch is sorted once and every series becomes a slice of one array, with gap days filled by the
same linear interpolation pandas' ``interpolate(limit_direction="both")`` does (``np.interp``:
straight lines between observations, the first or last observation carried to the edges), so the
values are those the per-series code produced.

Days are integer day numbers (days since 1970-01-01), which is what the contract's ``ds`` holds
(one row per series and day, at midnight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from capacity_assets.forecasting.engines.base import ForecastConfig, backtest_cutoff


@dataclass(frozen=True)
class Grid:
    """Series ``i`` covers days ``first[i] .. first[i] + length[i] - 1``; its values are
    ``y[offset[i] : offset[i + 1]]`` (NaN only where the series has no observation at all).
    The ``rows`` … ``valid_max`` fields describe the raw rows, for the engines' usability checks."""

    keys: list[tuple[str, str]]  # (server_id, resource), sorted
    first: np.ndarray  # int64 day number of each series' first day
    length: np.ndarray  # int64 days from the first to the last day
    offset: np.ndarray  # int64, len(keys) + 1
    y: np.ndarray  # float64 daily values of every series, one after the other
    rows: np.ndarray  # raw rows per series
    duplicated: np.ndarray  # bool: two rows for one day
    missing: np.ndarray  # raw rows whose y is missing
    missing_last_week: np.ndarray  # bool: a missing y among the last 7 raw rows
    valid_min: np.ndarray  # smallest and largest observed y (NaN when none)
    valid_max: np.ndarray

    @property
    def last(self) -> np.ndarray:
        return self.first + self.length - 1

    def values(self, i: int) -> np.ndarray:
        return self.y[self.offset[i] : self.offset[i + 1]]

    def train_days(self, cfg: ForecastConfig) -> np.ndarray:
        """Days of each series up to its ``backtest_cutoff``: what its backtest fit sees."""
        cut = {
            last: day_numbers([backtest_cutoff(pd.Timestamp(int(last), unit="D"), cfg)])[0]
            for last in np.unique(self.last)
        }
        cutoff = np.array([cut[last] for last in self.last], dtype=np.int64)
        return np.clip(cutoff - self.first + 1, 0, self.length)


def day_numbers(ds) -> np.ndarray:
    """int64 days since 1970-01-01 of datetimes (a Series, an index or an array)."""
    return np.asarray(pd.to_datetime(ds).to_numpy()).astype("datetime64[D]").astype(np.int64)


def timestamps(days: np.ndarray) -> np.ndarray:
    """datetime64[ns] at midnight of day numbers."""
    return np.asarray(days, np.int64).astype("datetime64[D]").astype("datetime64[ns]")


def grid(history: pd.DataFrame) -> Grid:
    """The batch's series (``server_id``, ``resource``, ``ds``, ``y``) on their daily grids."""
    server, servers = pd.factorize(history["server_id"], sort=True)
    res, resources = pd.factorize(history["resource"], sort=True)
    pairs, index = np.unique(server.astype(np.int64) * len(resources) + res, return_inverse=True)
    keys = [(servers[p // len(resources)], resources[p % len(resources)]) for p in pairs]
    n = len(keys)
    day = day_numbers(history["ds"])
    order = np.lexsort((day, index))
    code, day = index[order].astype(np.int64), day[order]
    raw = history["y"].to_numpy(float)[order]

    rows = np.bincount(code, minlength=n).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(rows)])
    end = start[1:] - 1
    nan = ~np.isfinite(raw)
    missing = np.bincount(code, weights=nan, minlength=n).astype(np.int64)
    pos_in = np.arange(len(raw)) - start[code]
    recent = pos_in >= rows[code] - 7
    missing_last_week = np.bincount(code, weights=nan & recent, minlength=n) > 0
    same = np.zeros(len(raw), bool)
    same[1:] = (code[1:] == code[:-1]) & (day[1:] == day[:-1])
    duplicated = np.bincount(code, weights=same, minlength=n) > 0
    if n == 0:
        valid_min = valid_max = np.zeros(0)
        first = length = np.zeros(0, np.int64)
    else:
        none = missing == rows
        valid_min = np.minimum.reduceat(np.where(nan, np.inf, raw), start[:-1])
        valid_max = np.maximum.reduceat(np.where(nan, -np.inf, raw), start[:-1])
        valid_min[none] = valid_max[none] = np.nan
        first = day[start[:-1]]
        length = day[end] - first + 1
    offset = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    y = np.full(int(offset[-1]), np.nan)
    y[offset[code] + day - first[code]] = raw  # a duplicated day keeps its last row
    return Grid(
        keys=keys,
        first=first,
        length=length,
        offset=offset,
        y=_interpolate(y, offset),
        rows=rows,
        duplicated=duplicated,
        missing=missing,
        missing_last_week=missing_last_week,
        valid_min=valid_min,
        valid_max=valid_max,
    )


def _interpolate(y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Gaps filled within each series as ``np.interp`` fills them (pandas' linear interpolation)."""
    gap = np.isnan(y)
    if not gap.any():
        return y
    idx = np.arange(len(y))
    series = np.repeat(np.arange(len(offset) - 1), np.diff(offset))
    lo_bound, hi_bound = offset[series], offset[series + 1] - 1
    prev = np.maximum.accumulate(np.where(gap, -1, idx))
    nxt = np.minimum.accumulate(np.where(gap, len(y), idx)[::-1])[::-1]
    has_prev, has_next = prev >= lo_bound, nxt <= hi_bound
    out = y.copy()
    both = gap & has_prev & has_next
    p, q, i = prev[both], nxt[both], idx[both]
    # np.interp's own arithmetic: slope * (x - x0) + y0
    out[both] = (y[q] - y[p]) / (q - p) * (i - p) + y[p]
    only_prev = gap & has_prev & ~has_next
    out[only_prev] = y[prev[only_prev]]
    only_next = gap & has_next & ~has_prev
    out[only_next] = y[nxt[only_next]]
    return out
