"""Integer keys for the tracking joins: a batch's history is millions of rows with text keys, and
hashing or copying those strings per operation is what costs time and memory. Each text column is
factorised once; series, series-vintages and series-days become int64 codes that numpy can sort,
search and bincount."""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY_SPAN = np.int64(1) << 32  # room for any day number in the low bits of a series-day key


def day_numbers(dates: pd.Series) -> np.ndarray:
    """Days since 1970-01-01 as int64, whatever the datetime unit (the IO manager returns us)."""
    return pd.to_datetime(dates).to_numpy("datetime64[D]").astype(np.int64)


def series_codes(*frames: pd.DataFrame) -> list[np.ndarray]:
    """One int64 code per row of each frame for its (server_id, resource), shared across frames."""
    sizes = [len(f) for f in frames]
    server, _ = pd.factorize(
        np.concatenate([f["server_id"].astype(object).to_numpy() for f in frames])
    )
    resource, res_names = pd.factorize(
        np.concatenate([f["resource"].astype(object).to_numpy() for f in frames])
    )
    pair = server.astype(np.int64) * max(len(res_names), 1) + resource
    return np.split(pair, np.cumsum(sizes)[:-1])


def series_vintage_codes(
    history: pd.DataFrame, series: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, first row of each code) for the (batch, vintage, series) of ``history`` rows;
    ``series`` are the rows' series_codes. Codes are 0..n-1 in order of first appearance."""
    batch, _ = pd.factorize(history["batch"].astype(object).to_numpy())
    vintage, vintages = pd.factorize(day_numbers(history["vintage"]))
    combined = (batch.astype(np.int64) * max(len(vintages), 1) + vintage) * (
        int(series.max(initial=0)) + 1
    ) + series
    codes, _ = pd.factorize(combined)
    _, first = np.unique(codes, return_index=True)
    return codes, first


def match_days(
    left_series: np.ndarray, left_days: np.ndarray, right_series: np.ndarray, right_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(left rows, right rows) with the same series and day; ``right`` has one row per series-day
    (processed_data's contract). A sorted search instead of a merge: no key frames are built."""
    right_key = right_series * DAY_SPAN + right_days
    order = np.argsort(right_key, kind="stable")
    sorted_key = right_key[order]
    left_key = left_series * DAY_SPAN + left_days
    pos = np.searchsorted(sorted_key, left_key)
    if not len(sorted_key):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pos_clipped = np.minimum(pos, len(sorted_key) - 1)
    found = (pos < len(sorted_key)) & (sorted_key[pos_clipped] == left_key)
    return np.flatnonzero(found), order[pos_clipped[found]]
